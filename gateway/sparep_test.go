package gateway

import (
	"runtime"
	"testing"
)

// TestSpareP: the workers get one P more than there are of them, a higher
// GOMAXPROCS stays, and one the environment sets is left alone.
func TestSpareP(t *testing.T) {
	old := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(old)
	if got := spareP(2, ""); got != 3 {
		t.Errorf("2 workers, GOMAXPROCS 1: %d, want 3", got)
	}
	runtime.GOMAXPROCS(8)
	if got := spareP(2, ""); got != 8 {
		t.Errorf("2 workers, GOMAXPROCS 8: %d, want 8 kept", got)
	}
	runtime.GOMAXPROCS(1)
	if got := spareP(2, "1"); got != 1 {
		t.Errorf("GOMAXPROCS=1 in the environment: %d, want 1 kept", got)
	}
}
