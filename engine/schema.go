package engine

import (
	"fmt"
	"strings"
)

// Role names the fields the engine itself understands.
type Role uint8

const (
	RoleKey    Role = iota // the entity: user id, account, device…
	RoleAmount             // the number windows sum by default
	RoleType               // the event type
	RoleTS                 // the producer's timestamp (ms since epoch by convention)
	RoleSrc                // the producer's address as written in the event
	numRoles
)

var roleNames = [numRoles]string{"key", "amount", "type", "ts", "src"}

func (r Role) String() string {
	if r < numRoles {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", r)
}

// Schema maps roles to JSON paths and says which roles every event must
// carry. Paths use gjson syntax: "user_id", "meta.country". An empty path
// means the role is not used.
type Schema struct {
	Key, Amount, Type, TS, Src string
	// Required lists roles whose absence makes an event a decode error
	// (counted as missing_field).
	Required []Role
}

// DefaultSchema is the risk-control event of DESIGN.md:
//
//	{"event_id":"e-1","user_id":"u-1","amount":12.5,"currency":"USD",
//	 "event_type":"payment","ts":1732550400123,"ip":"203.0.113.7"}
func DefaultSchema() Schema {
	return Schema{
		Key: "user_id", Amount: "amount", Type: "event_type", TS: "ts", Src: "ip",
		Required: []Role{RoleKey},
	}
}

func (s *Schema) path(r Role) string {
	switch r {
	case RoleKey:
		return s.Key
	case RoleAmount:
		return s.Amount
	case RoleType:
		return s.Type
	case RoleTS:
		return s.TS
	case RoleSrc:
		return s.Src
	}
	return ""
}

// roleKinds says which JSON types a role accepts; any other type is a
// wrong_type decode error.
func roleAccepts(r Role, k Kind) bool {
	switch r {
	case RoleKey:
		return k == KindString || k == KindNumber
	case RoleAmount, RoleTS:
		return k == KindNumber
	case RoleType, RoleSrc:
		return k == KindString
	}
	return true
}

// ValidPath checks a field path as the engine reads it: dotted
// components, none empty, no gjson wildcards, queries or modifiers. The
// gateway checks sinks' key paths with it.
func ValidPath(p string) error {
	if p == "" {
		return fmt.Errorf("empty path")
	}
	for _, part := range strings.Split(p, ".") {
		if part == "" {
			return fmt.Errorf("path %q has an empty component", p)
		}
	}
	if strings.ContainsAny(p, "*?#|@\\") {
		return fmt.Errorf("path %q: wildcards, queries and modifiers are not supported", p)
	}
	return nil
}

// fieldSet is the compiled list of paths one program reads from every
// event. Slots are indices into Event.values.
type fieldSet struct {
	paths []string
	index map[string]int // path → slot (compile time only)
	// top are the distinct first path components, each with the slot that
	// wants the whole value (or -1) and the nested paths below it.
	top []topField
	// byFirst[c] has bit t set when top[t].name is plain (printable ASCII,
	// no quote or backslash) and starts with c: the decoder matches such
	// names in place, without scanning the key first.
	byFirst [256]uint64
	// nonPlain: some top name is not plain, so a key without escapes that
	// the fast path did not match must still be compared with the names.
	nonPlain bool
	// role slots (-1 when the role is unused) and the required checks.
	roleSlot [numRoles]int
	required []Role
}

// plainName reports whether a JSON key equal to name can only be written
// as the bytes of name (no escapes needed).
func plainName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// maxTopFields bounds the distinct top-level names one program reads, so
// that the decoder can track them in one 64-bit mask.
const maxTopFields = 64

type topField struct {
	name   string
	direct int
	nested []nestedPath
}

type nestedPath struct {
	slot int
	rest string // gjson path below the top-level value
}

func newFieldSet(s Schema) (*fieldSet, error) {
	fs := &fieldSet{index: map[string]int{}}
	for r := Role(0); r < numRoles; r++ {
		fs.roleSlot[r] = -1
		p := s.path(r)
		if p == "" {
			continue
		}
		slot, err := fs.add(p)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", r, err)
		}
		fs.roleSlot[r] = slot
	}
	for _, r := range s.Required {
		if r >= numRoles {
			return nil, fmt.Errorf("schema: unknown required role %d", r)
		}
		if fs.roleSlot[r] < 0 {
			return nil, fmt.Errorf("schema: role %s is required but has no path", r)
		}
		fs.required = append(fs.required, r)
	}
	return fs, nil
}

// add registers a path and returns its slot; the same path gets one slot.
func (fs *fieldSet) add(path string) (int, error) {
	if slot, ok := fs.index[path]; ok {
		return slot, nil
	}
	if err := ValidPath(path); err != nil {
		return 0, err
	}
	slot := len(fs.paths)
	fs.paths = append(fs.paths, path)
	fs.index[path] = slot
	name, rest, nested := strings.Cut(path, ".")
	ti := -1
	for i := range fs.top {
		if fs.top[i].name == name {
			ti = i
			break
		}
	}
	if ti < 0 {
		if len(fs.top) == maxTopFields {
			return 0, fmt.Errorf("path %q: more than %d distinct top-level fields", path, maxTopFields)
		}
		fs.top = append(fs.top, topField{name: name, direct: -1})
		ti = len(fs.top) - 1
		if plainName(name) {
			fs.byFirst[name[0]] |= 1 << uint(ti)
		} else {
			fs.nonPlain = true
		}
	}
	if nested {
		fs.top[ti].nested = append(fs.top[ti].nested, nestedPath{slot: slot, rest: rest})
	} else {
		fs.top[ti].direct = slot
	}
	return slot, nil
}
