package testenv

import (
	"os"
	"testing"
)

// WriteAtomic replaces path as editors and config managers do: a
// temporary file beside it, renamed over it (inotify: IN_MOVED_TO).
func WriteAtomic(t testing.TB, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
