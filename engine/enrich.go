package engine

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/xgate/xgate/engine/lists"
)

// Added fields. A top-level `enrich:` list adds fields to the record of
// every decided event, a rule's `enrich:` to the record of every event the
// rule fired on (any action). A field's value is either a map list's value
// (`from: lookup("risk_tier", user_id)`: left out when the key is not in
// the list) or a condition (`from: ip in cidrs("partners")`: true or
// false). When several sources name the same field, the first that fires
// wins: rules in order, then the top-level list. A field the event itself
// carries is added all the same (counted in Stats.EnrichPresent), and the
// sinks cut the event's own member of that name: an added field is the
// gateway's, a sender cannot forge it, and a record never has a key twice.
//
// The worker encodes the added members as JSON text into its own buffer
// (Decision.Extra, `,"risk_tier":"high"`), which the sinks copy into the
// record before the object's closing brace. Map values are encoded when
// the list is loaded, so adding one is a copy: nothing is allocated.

// EnrichSpec is one added field.
type EnrichSpec struct {
	Field string // the top-level name of the added field
	From  string // lookup("list", field) or a condition
}

// EnrichError is a problem with one added field: Rule is "" for the
// top-level list; Part is "field" or "from".
type EnrichError struct {
	Rule  string
	Index int
	Part  string
	Err   error
}

func (e *EnrichError) Error() string {
	if e.Rule != "" {
		return fmt.Sprintf("rule %q: enrich[%d].%s: %v", e.Rule, e.Index, e.Part, e.Err)
	}
	return fmt.Sprintf("enrich[%d].%s: %v", e.Index, e.Part, e.Err)
}

func (e *EnrichError) Unwrap() error { return e.Err }

// maxEnrichFields bounds the distinct added field names of a program (one
// bit each in the per-event mask).
const maxEnrichFields = 64

type enrichField struct {
	member string // `,"name":`
	bit    uint64
	slot   int // the event's own field of that name
	// lookup: list and the slot of its key; condition: cond.
	list    *lists.List
	keySlot int
	cond    pred
}

// enrichNames gives every distinct added field name of a program its bit.
type enrichNames map[string]uint64

func compileEnrich(fs *fieldSet, lists map[string]*lists.List, names enrichNames, rule string, specs []EnrichSpec) ([]enrichField, error) {
	var out []enrichField
	var errs []error
	for i, s := range specs {
		fail := func(part string, err error) {
			errs = append(errs, &EnrichError{Rule: rule, Index: i, Part: part, Err: err})
		}
		if s.Field == "" {
			fail("field", errors.New("missing: name the field to add"))
			continue
		}
		if !plainName(s.Field) || len(s.Field) > 128 {
			fail("field", fmt.Errorf("%q: want a plain top-level name (printable ASCII without quotes or backslashes)", s.Field))
			continue
		}
		if ValidPath(s.Field) != nil || strings.IndexByte(s.Field, '.') >= 0 {
			fail("field", fmt.Errorf("%q: an added field is a top-level name, without dots", s.Field))
			continue
		}
		bit, ok := names[s.Field]
		if !ok {
			if len(names) == maxEnrichFields {
				fail("field", fmt.Errorf("more than %d distinct added fields", maxEnrichFields))
				continue
			}
			bit = 1 << uint(len(names))
			names[s.Field] = bit
		}
		slot, err := fs.add(s.Field)
		if err != nil {
			fail("field", err)
			continue
		}
		f := enrichField{member: "," + strconv.Quote(s.Field) + ":", bit: bit, slot: slot, keySlot: -1}
		owner := rule
		if owner == "" {
			owner = fmt.Sprintf("enrich[%d]", i)
		}
		if s.From == "" {
			fail("from", errors.New(`missing: want lookup("list", field) or a condition`))
			continue
		}
		n, err := parseExpr(owner, s.From)
		if err != nil {
			fail("from", err)
			continue
		}
		cp := &compiler{fs: fs, lists: lists, rule: owner, src: s.From}
		if ln, ok := n.(*lookupNode); ok {
			o, _, err := cp.operand(ln)
			if err != nil {
				fail("from", err)
				continue
			}
			f.list, f.keySlot = o.list, o.slot
		} else if f.cond, err = cp.compile(n); err != nil {
			fail("from", err)
			continue
		}
		out = append(out, f)
	}
	return out, errors.Join(errs...)
}

// addFields appends the members of fs that are not yet in the record (by
// mask) to w.extra. It does not allocate once w.extra has grown to the
// largest record's members.
func (w *Worker) addFields(fs []enrichField, c *evalCtx, mask *uint64) {
	for i := range fs {
		f := &fs[i]
		if *mask&f.bit != 0 {
			continue
		}
		if c.vals[f.slot].Kind != KindMissing {
			// The event has a member of that name: the added value is
			// still written, and the sinks cut the event's member
			// (the added field is the gateway's, never the sender's).
			w.c.enrichPresent++
		}
		if f.cond != nil {
			w.extra = append(w.extra, f.member...)
			w.extra = strconv.AppendBool(w.extra, f.cond(c))
			*mask |= f.bit
			continue
		}
		k := &c.vals[f.keySlot]
		if k.Kind != KindString && k.Kind != KindNumber {
			continue
		}
		if js, ok := f.list.Load().LookupJSON(k.Str); ok {
			w.extra = append(w.extra, f.member...)
			w.extra = append(w.extra, js...)
			*mask |= f.bit
		}
	}
}
