package window

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"strings"
)

// Amounts are fixed-point integers: a JSON number with at most Decimals
// digits after the point becomes number × 10^Decimals, exactly. Sums over a
// window are kept in 128 bits, so adding and removing amounts never rounds
// and never overflows (2^63 amounts of 2^63 units each still fit).

// ErrAmount is matched (errors.Is) by every error ParseDecimal returns.
var ErrAmount = errors.New("bad amount")

// MaxDecimals is the most decimals ParseDecimal accepts.
const MaxDecimals = 18

var pow10 = func() (p [19]uint64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

// ParseDecimal parses the text of a JSON number (as it appears in the
// event: -12, 1234.56, 1.5e3) into units of 10^-decimals. It is exact: a
// number with more significant decimals than that (1.005 with 2 decimals)
// or outside the int64 range of units is an error, never rounded.
func ParseDecimal(s string, decimals int) (int64, error) {
	if decimals < 0 || decimals > MaxDecimals {
		return 0, fmt.Errorf("%w: %d decimals: want 0..%d", ErrAmount, decimals, MaxDecimals)
	}
	in := s
	neg := false
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	// Mantissa digits (without leading zeros), the number of them that are
	// fraction digits, and the exponent.
	var mant []byte
	var buf [24]byte
	frac, sawDigit := 0, false
	i := 0
	digits := func(fraction bool) {
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			sawDigit = true
			if fraction {
				frac++
			}
			if len(mant) == 0 && s[i] == '0' {
				continue // leading zero: no value
			}
			if mant == nil {
				mant = buf[:0]
			}
			mant = append(mant, s[i])
		}
	}
	digits(false)
	if !sawDigit {
		return 0, fmt.Errorf("%w: %q is not a number", ErrAmount, in)
	}
	if i < len(s) && s[i] == '.' {
		i++
		before := frac
		digits(true)
		if frac == before {
			return 0, fmt.Errorf("%w: %q is not a number", ErrAmount, in)
		}
	}
	exp := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		eneg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			eneg = s[i] == '-'
			i++
		}
		start := i
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			if exp < 1e6 { // beyond any representable value; keep counting digits
				exp = exp*10 + int(s[i]-'0')
			}
		}
		if i == start {
			return 0, fmt.Errorf("%w: %q is not a number", ErrAmount, in)
		}
		if eneg {
			exp = -exp
		}
	}
	if i != len(s) {
		return 0, fmt.Errorf("%w: %q is not a number", ErrAmount, in)
	}
	// value = mant × 10^(exp - frac); in units: mant × 10^shift.
	shift := exp - frac + decimals
	for len(mant) > 0 && mant[len(mant)-1] == '0' {
		mant = mant[:len(mant)-1]
		shift++
	}
	if len(mant) == 0 {
		return 0, nil
	}
	if shift < 0 {
		return 0, fmt.Errorf("%w: %q has more than %d decimals", ErrAmount, in, decimals)
	}
	if len(mant)+shift > 19 {
		return 0, fmt.Errorf("%w: %q is out of range", ErrAmount, in)
	}
	var v uint64
	for _, c := range mant {
		v = v*10 + uint64(c-'0') // at most 19 digits: fits
	}
	hi, v := bits.Mul64(v, pow10[shift])
	limit := uint64(math.MaxInt64)
	if neg {
		limit++ // -2^63 is representable
	}
	if hi != 0 || v > limit {
		return 0, fmt.Errorf("%w: %q is out of range", ErrAmount, in)
	}
	if neg {
		return -int64(v), nil // for v = 2^63 this wraps to MinInt64, which is right
	}
	return int64(v), nil
}

// Int128 is a signed 128-bit integer: Hi×2^64 + Lo.
type Int128 struct {
	Hi int64
	Lo uint64
}

// I128 returns v as an Int128.
func I128(v int64) Int128 { return Int128{Hi: v >> 63, Lo: uint64(v)} }

// Add returns a + v.
func (a Int128) Add(v int64) Int128 {
	lo, c := bits.Add64(a.Lo, uint64(v), 0)
	return Int128{Hi: a.Hi + v>>63 + int64(c), Lo: lo}
}

// Sub returns a - v.
func (a Int128) Sub(v int64) Int128 {
	lo, b := bits.Sub64(a.Lo, uint64(v), 0)
	return Int128{Hi: a.Hi - v>>63 - int64(b), Lo: lo}
}

// Cmp returns -1, 0 or +1 as a is less than, equal to or greater than b.
func (a Int128) Cmp(b Int128) int {
	switch {
	case a.Hi < b.Hi:
		return -1
	case a.Hi > b.Hi:
		return 1
	case a.Lo < b.Lo:
		return -1
	case a.Lo > b.Lo:
		return 1
	}
	return 0
}

// Big returns a as a big.Int.
func (a Int128) Big() *big.Int {
	x := big.NewInt(a.Hi)
	x.Lsh(x, 64)
	return x.Add(x, new(big.Int).SetUint64(a.Lo))
}

// Int64 returns a and whether it fits an int64.
func (a Int128) Int64() (int64, bool) {
	v := int64(a.Lo)
	return v, a.Hi == v>>63
}

// FormatDecimal writes units of 10^-decimals as a decimal number with
// exactly decimals digits after the point (none when decimals is 0).
func FormatDecimal(a Int128, decimals int) string {
	s := a.Big().String()
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	if decimals > 0 {
		if len(s) <= decimals {
			s = strings.Repeat("0", decimals-len(s)+1) + s
		}
		s = s[:len(s)-decimals] + "." + s[len(s)-decimals:]
	}
	if neg {
		s = "-" + s
	}
	return s
}
