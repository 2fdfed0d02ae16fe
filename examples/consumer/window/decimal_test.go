package window

import (
	"errors"
	"math"
	"testing"
)

func TestParseDecimal(t *testing.T) {
	ok := []struct {
		in   string
		dec  int
		want int64
	}{
		{"0", 2, 0},
		{"-0", 2, 0},
		{"12", 2, 1200},
		{"1234.56", 2, 123456},
		{"1234.5", 2, 123450},
		{"1234.560000", 2, 123456},
		{"-12.34", 2, -1234},
		{"0.05", 2, 5},
		{"1e3", 0, 1000},
		{"1.5E+3", 2, 150000},
		{"12500e-2", 2, 12500},
		{"0.000e5", 0, 0},
		{"100e-2", 0, 1},
		{"9223372036854775807", 0, math.MaxInt64},
		{"-9223372036854775808", 0, math.MinInt64},
		{"92233720368547758.07", 2, math.MaxInt64},
		{"0.000000000000000001", 18, 1},
	}
	for _, c := range ok {
		got, err := ParseDecimal(c.in, c.dec)
		if err != nil || got != c.want {
			t.Errorf("ParseDecimal(%q, %d) = %d, %v; want %d", c.in, c.dec, got, err, c.want)
		}
	}
	bad := []struct {
		in  string
		dec int
	}{
		{"", 2}, {"-", 2}, {"1.", 2}, {".5", 2}, {"1e", 2}, {"1e+", 2}, {"abc", 2}, {"1.2.3", 2},
		{"\"12\"", 2}, {"1 ", 2}, {"0x10", 2},
		{"1.005", 2},                // more decimals than units
		{"1e-3", 2},                 // same
		{"9223372036854775808", 0},  // out of range
		{"-9223372036854775809", 0}, // out of range
		{"1e19", 0},
		{"1e999999999999", 0},
		{"92233720368547758.08", 2},
		{"1", 19}, // bad decimals
		{"1", -1},
	}
	for _, c := range bad {
		if v, err := ParseDecimal(c.in, c.dec); !errors.Is(err, ErrAmount) {
			t.Errorf("ParseDecimal(%q, %d) = %d, %v; want ErrAmount", c.in, c.dec, v, err)
		}
	}
}

func TestInt128(t *testing.T) {
	var s Int128
	for range 4 {
		s = s.Add(math.MaxInt64)
	}
	if got := s.Big().String(); got != "36893488147419103228" { // 4 × (2^63 − 1)
		t.Fatalf("4×MaxInt64 = %s", got)
	}
	if _, fits := s.Int64(); fits {
		t.Fatal("4×MaxInt64 claims to fit an int64")
	}
	for range 4 {
		s = s.Sub(math.MaxInt64)
	}
	if s != (Int128{}) {
		t.Fatalf("back to zero: %+v", s)
	}
	s = s.Sub(5).Add(math.MinInt64).Sub(math.MinInt64)
	if v, fits := s.Int64(); !fits || v != -5 {
		t.Fatalf("-5 = %d %v (%+v)", v, fits, s)
	}
	if I128(-1).Cmp(I128(1)) >= 0 || I128(1).Cmp(I128(-1)) <= 0 || I128(7).Cmp(I128(7)) != 0 {
		t.Fatal("Cmp")
	}
	for _, c := range []struct {
		v    int64
		dec  int
		want string
	}{
		{123456, 2, "1234.56"}, {-5, 2, "-0.05"}, {0, 2, "0.00"}, {7, 0, "7"}, {-1234, 3, "-1.234"},
	} {
		if got := FormatDecimal(I128(c.v), c.dec); got != c.want {
			t.Errorf("FormatDecimal(%d, %d) = %q, want %q", c.v, c.dec, got, c.want)
		}
	}
}
