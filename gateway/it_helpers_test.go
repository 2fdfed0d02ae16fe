package gateway

import (
	"testing"

	"github.com/xgate/xgate/bpf"
)

func reasonByName(t *testing.T, name string) bpf.Reason {
	t.Helper()
	for r := bpf.Reason(0); r < bpf.ReasonMax; r++ {
		if r.String() == name {
			return r
		}
	}
	t.Fatalf("no XDP reason %q", name)
	return 0
}
