package sink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink/output"
)

// FuzzKeyedRecord: a keyed record encoded into a slab (after whatever the
// slab holds already) parses back to every field of the decision and its
// origin — the verdict code, the rule (the error's name for a reject), the
// key (the engine's, else the sink's key path read from the event), the
// receive time as a number and as text, the meta fields the sink asks for
// (source, queue, receive time), the event's bytes — never runs past
// keyedBound and leaves the slab's earlier records alone. The key path is
// fuzzed too: gjsonPath must make gjson read any field name literally.
func FuzzKeyedRecord(f *testing.F) {
	f.Add([]byte(`{"user_id":"u-1","amount":5}`), uint8(0), uint8(0), "", uint16(0), uint16(0), int64(1732550400123456789), uint16(0), "user_id", "v")
	f.Add([]byte(`{"user_id":1.50e3}`), uint8(2), uint8(0), "big", uint16(0), uint16(0), int64(-1<<63), uint16(7), "user_id", "")
	f.Add([]byte(`{"user_id":"a\"\u00e9\n"}`), uint8(1), uint8(0), "r", uint16(0), uint16(0), int64(0), uint16(0), "a.b", "\xff")
	f.Add([]byte(`{"user_id":"u-1"`), uint8(1), uint8(2), "", uint16(0), uint16(0), int64(1), uint16(100), "!true", "x")
	f.Add([]byte(`{"user_id":"first","user_id":"second"}`), uint8(3), uint8(0), "b", uint16(13), uint16(5), int64(-1), uint16(0), "#", "@this")
	f.Add([]byte(`{"user":{"id":"n-1"}}`), uint8(0), uint8(0), "", uint16(0), uint16(0), int64(1<<63-1), uint16(0), `a\b*c?d|e#f@g`, `"\`)
	f.Add([]byte{}, uint8(0), uint8(200), strings.Repeat("r", 300), uint16(0), uint16(0), int64(5), uint16(1), "", "")
	f.Add([]byte(`{"a":1}`), uint8(0), uint8(0), "", uint16(0), uint16(0), int64(-1<<63), uint16(3), "a", "b")
	f.Add([]byte("{ \n}"), uint8(2), uint8(0), "r", uint16(0), uint16(0), int64(7), uint16(1), "k", "v")
	f.Fuzz(func(t *testing.T, raw []byte, action, decErr uint8, rule string, keyAt, keyLen uint16, rxWall int64, pre uint16, field, val string) {
		// The origin and the meta fields asked for, from the other inputs:
		// a source of either family (or none), a queue (or none).
		var o Origin
		o.Queue = int(keyAt) - 100
		if len(val) >= 4 {
			var a16 [16]byte
			copy(a16[:], val)
			addr := netip.AddrFrom16(a16)
			if val[0]&1 != 0 {
				addr = addr.Unmap()
				if !addr.Is4() {
					addr = netip.AddrFrom4([4]byte(a16[:4]))
				}
			}
			o.Src = netip.AddrPortFrom(addr, keyLen)
		}
		d := engine.Decision{Raw: raw, Action: engine.Action(action % uint8(engine.NumActions)), Err: engine.DecodeError(decErr), Rule: rule}
		// The engine's key is a view into the event or an unescaped copy
		// of part of it: never longer. keyAt/keyLen pick such a part.
		if int(keyAt)+int(keyLen) <= len(raw) {
			d.Key = string(raw[keyAt : int(keyAt)+int(keyLen)])
		}
		sk := &sink{keyed: true, keyPath: gjsonPath("user_id")}
		ro := &recOrigin{o: &o, rxWall: rxWall}
		checkKeyed(t, sk, &d, ro, int(pre%512))
		sk.metaOn = true
		for i := range sk.metaWant {
			sk.metaWant[i] = pre&(1<<(9+i)) != 0
		}
		checkKeyed(t, sk, &d, ro, int(pre%512))

		// Added fields (enrichment): one member made of field and val.
		if pre&1 != 0 {
			name, _ := json.Marshal(field)
			value, _ := json.Marshal(val)
			d.Extra = fmt.Appendf(nil, ",%s:%s", name, value)
			checkKeyed(t, sk, &d, ro, int(pre%512))
			d.Extra = nil
		}

		// A field of any name (a schema path's component: UTF-8, as YAML
		// is), read through gjsonPath, gives its value.
		if field == "" || strings.Contains(field, ".") || !utf8.ValidString(field) {
			return
		}
		name, _ := json.Marshal(field)
		value, _ := json.Marshal(val)
		var want string
		_ = json.Unmarshal(value, &want) // json.Marshal made invalid UTF-8 U+FFFD
		ev := append(append(append(append([]byte(`{`), name...), ':'), value...), '}')
		sk.keyPath = gjsonPath(field)
		k := appendKey(nil, ev, sk.keyPath)
		if string(k) != want {
			t.Fatalf("field %q of %s through path %q: key %q, want %q", field, ev, sk.keyPath, k, want)
		}
		checkKeyed(t, sk, &engine.Decision{Raw: ev, Action: engine.ActionPass}, ro, 0)
	})
}

// checkExtra checks the value of a record whose decision has added fields:
// within the bound, and for an event that is one JSON object from '{' to
// '}' (as the engine's events are), that object with the fields in it.
func checkExtra(t *testing.T, d *engine.Decision, value []byte) {
	t.Helper()
	if len(value) > len(d.Raw)+len(d.Extra) {
		t.Fatalf("value of %d bytes from an event of %d and fields of %d", len(value), len(d.Raw), len(d.Extra))
	}
	raw := d.Raw
	if !json.Valid(raw) || raw[0] != '{' || raw[len(raw)-1] != '}' {
		return
	}
	var got, want map[string]any
	extra := append(append([]byte("{"), d.Extra[1:]...), '}')
	if err := json.Unmarshal(value, &got); err != nil {
		t.Fatalf("value %q (event %q, fields %q) is no JSON object: %v", value, d.Raw, d.Extra, err)
	}
	if err := json.Unmarshal(extra, &want); err != nil {
		t.Fatalf("fields %q: %v", d.Extra, err)
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Fatalf("value %q: field %q is %v, want %v", value, k, got[k], v)
		}
	}
}

// checkKeyed encodes d after pre bytes of earlier records as AddAt does
// (nothing when keyedBound says it does not fit a slab: TooBig) and checks
// what output.Parse reads back.
func checkKeyed(t *testing.T, sk *sink, d *engine.Decision, ro *recOrigin, pre int) {
	t.Helper()
	c := classOf(d)
	bound := keyedBound(d, c)
	if bound > sinkSlabSize {
		return // AddAt counts it too big and never encodes it
	}
	slab := make([]byte, pre, pre+bound)
	for i := range slab {
		slab[i] = byte(i)
	}
	slab = sk.encodeKeyed(slab, d, c, ro)
	if len(slab) > pre+bound {
		t.Fatalf("record of %d bytes, keyedBound %d (rule %d, event %d, key %d bytes)", len(slab)-pre, bound, len(d.Rule), len(d.Raw), len(d.Key))
	}
	for i := range pre {
		if slab[i] != byte(i) {
			t.Fatalf("encodeKeyed changed byte %d of the slab's earlier records", i)
		}
	}
	var r output.Record
	output.Parse(slab[pre:], &r)

	wantVerdict, wantRule := uint8(d.Action), d.Rule
	var wantKey []byte
	switch {
	case c == classReject:
		wantVerdict, wantRule = output.VerdictReject, d.Err.String()
	case d.Key != "":
		wantKey = []byte(d.Key)
	case len(d.Raw) > 0:
		// The sink's own read of the key: gjson on the event, as the
		// engine reads it (a string's text, a number's literal).
		switch g := gjson.Get(unsafe.String(unsafe.SliceData(d.Raw), len(d.Raw)), sk.keyPath); g.Type {
		case gjson.String:
			wantKey = []byte(g.Str)
		case gjson.Number:
			wantKey = []byte(g.Raw)
		}
	}
	if len(wantKey) == 0 {
		wantKey = nil // an empty key is no key
	}
	var wantSrc, wantQueue, wantTime []byte
	if sk.metaOn {
		if sk.metaWant[metaSrc] && ro.o.Src.IsValid() {
			wantSrc = []byte(ro.o.Src.String())
		}
		if sk.metaWant[metaQueue] && ro.o.Queue >= 0 {
			wantQueue = []byte(strconv.Itoa(ro.o.Queue))
		}
		if sk.metaWant[metaRxTime] {
			wantTime = []byte(time.Unix(0, ro.rxWall).UTC().Format(output.RxTimeLayout))
		}
	}
	rxWall := ro.rxWall
	switch {
	case r.Verdict != wantVerdict:
		t.Fatalf("verdict code %d, want %d", r.Verdict, wantVerdict)
	case string(r.Rule) != wantRule:
		t.Fatalf("rule %q, want %q", r.Rule, wantRule)
	case (r.Key == nil) != (wantKey == nil) || !bytes.Equal(r.Key, wantKey):
		t.Fatalf("key %q (nil %v), want %q (nil %v)", r.Key, r.Key == nil, wantKey, wantKey == nil)
	case r.RxNs != rxWall || string(r.RxText) != strconv.FormatInt(rxWall, 10):
		t.Fatalf("receive time %d %q, want %d", r.RxNs, r.RxText, rxWall)
	case !bytes.Equal(r.Src, wantSrc) || !bytes.Equal(r.Queue, wantQueue) || !bytes.Equal(r.RxTime, wantTime):
		t.Fatalf("meta src %q queue %q time %q, want %q %q %q", r.Src, r.Queue, r.RxTime, wantSrc, wantQueue, wantTime)
	case len(d.Extra) == 0 || c == classReject:
		if !bytes.Equal(r.Value, d.Raw) {
			t.Fatalf("value %q, want the event %q", r.Value, d.Raw)
		}
	default:
		checkExtra(t, d, r.Value)
	case cap(r.Rule) != len(r.Rule) || cap(r.Key) != len(r.Key) || cap(r.RxText) != len(r.RxText):
		t.Fatal("a view's capacity reaches into the next part: an append to it would overwrite the record")
	}
}
