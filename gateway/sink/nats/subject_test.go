package nats

import "testing"

func TestSubjectTemplate(t *testing.T) {
	tm, err := parseSubjectTemplate("a.x{key}y.{verdict}.{rule}")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(tm.appendSubject(nil, []byte("k.1"), []byte("pass"), nil)); got != "a.xk_1y.pass._" {
		t.Errorf("subject %q", got)
	}
	if w := tm.wildcard(); w != "a.*.*.*" {
		t.Errorf("wildcard %q", w)
	}
	for _, c := range []struct {
		have []string
		want string
		ok   bool
	}{
		{[]string{"a.>"}, "a.*.b", true},
		{[]string{"a.*.b"}, "a.*.b", true},
		{[]string{"a.*"}, "a.*.b", false},
		{[]string{"b.>", "a.*.*"}, "a.*.b", true},
		{[]string{">"}, "x", true},
		{[]string{"a.>"}, "a", false},
		{[]string{"a.b"}, "a.*", false},
	} {
		if got := subjectsCover(c.have, c.want); got != c.ok {
			t.Errorf("subjectsCover(%v, %s) = %v", c.have, c.want, got)
		}
	}
}
