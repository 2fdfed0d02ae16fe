package engine

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Memory is what a Config's state tables take: the rate limiters' and
// windows' tables, segments and registers, all allocated up front when the
// program is built. The figures are exact: they are the sizes of the
// slices the engine allocates (Stats reports the same Bytes afterwards);
// the fixed overhead per rule (about 1 KiB of headers and counters) is
// left out.
type Memory struct {
	Total uint64       // sum of Rules' Bytes (saturating)
	Rules []RuleMemory // the stateful rules, in config order
}

// RuleMemory is the state of one rate-limit or window rule.
type RuleMemory struct {
	Name        string
	Kind        string // "rate_limit" or "window"
	Keys        uint64 // table capacity: max_keys rounded up to a power of two
	BytesPerKey uint64
	Bytes       uint64 // Keys * BytesPerKey
}

// ErrMemoryBudget is matched (errors.Is) by the *BudgetError New, Reload and
// Validate return for a config over Config.MemoryBudget.
var ErrMemoryBudget = errors.New("over the memory budget")

// BudgetError says which rules make a config exceed its memory budget.
type BudgetError struct {
	Budget uint64
	Memory Memory
}

func (e *BudgetError) Error() string {
	rules := slices.Clone(e.Memory.Rules)
	slices.SortStableFunc(rules, func(a, b RuleMemory) int {
		switch {
		case a.Bytes > b.Bytes:
			return -1
		case a.Bytes < b.Bytes:
			return 1
		}
		return 0
	})
	var sb strings.Builder
	fmt.Fprintf(&sb, "rules' state needs %d bytes, %s: ", e.Memory.Total, ErrMemoryBudget)
	fmt.Fprintf(&sb, "budget %d bytes", e.Budget)
	for i, r := range rules {
		if i == 3 {
			fmt.Fprintf(&sb, "; and %d more", len(rules)-i)
			break
		}
		fmt.Fprintf(&sb, "; rule %q: %d bytes (%s, %d keys × %d bytes)", r.Name, r.Bytes, r.Kind, r.Keys, r.BytesPerKey)
	}
	if len(rules) > 0 {
		fmt.Fprintf(&sb, ": lower max_keys of rule %q (or its window's size/slide), or raise the budget", rules[0].Name)
	}
	return sb.String()
}

func (e *BudgetError) Is(target error) bool { return target == ErrMemoryBudget }

func memoryOf(p *Program) Memory {
	var m Memory
	for _, r := range p.rules {
		rm := RuleMemory{Name: r.name}
		switch {
		case r.rlPlan != nil:
			rm.Kind, rm.Keys, rm.BytesPerKey = "rate_limit", r.rlPlan.Capacity(), r.rlPlan.BytesPerKey()
		case r.wPlan != nil:
			rm.Kind, rm.Keys, rm.BytesPerKey = "window", r.wPlan.Capacity(), r.wPlan.BytesPerKey()
		default:
			continue
		}
		rm.Bytes = r.bytes()
		m.Rules = append(m.Rules, rm)
		if m.Total > math.MaxUint64-rm.Bytes {
			m.Total = math.MaxUint64
		} else {
			m.Total += rm.Bytes
		}
	}
	return m
}

func (m Memory) check(budget uint64) error {
	if budget > 0 && m.Total > budget {
		return &BudgetError{Budget: budget, Memory: m}
	}
	return nil
}

// Validate checks cfg as New does (schema, limits, every rule, and the
// memory budget) without allocating any state table, and returns the
// memory the tables would take. A config Validate accepts, New accepts
// too (unless the host cannot give the memory Validate reported). On a
// budget error the Memory is returned as well, for per-rule figures.
func Validate(cfg Config) (Memory, error) {
	_, mem, err := plan(cfg, cfg.Clock)
	if err != nil {
		return Memory{}, err
	}
	return mem, mem.check(cfg.MemoryBudget)
}
