package money

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Amount
		err  error
	}{
		{"OK", "1299.99", 129999, nil},
		{"OKWhole", "5", 500, nil},
		{"OKOnePlace", "0.5", 50, nil},
		{"OKZero", "0", 0, nil},
		{"OKLeadingZeros", "0007.10", 710, nil},
		{"OKMax", "9999999999.99", Max, nil},
		{"ErrTooLarge", "10000000000.00", 0, ErrTooLarge},
		{"ErrThreePlaces", "1.999", 0, ErrInvalid},
		{"ErrNegative", "-1.00", 0, ErrInvalid},
		{"ErrEmpty", "", 0, ErrInvalid},
		{"ErrTrailingDot", "1.", 0, ErrInvalid},
		{"ErrLeadingDot", ".5", 0, ErrInvalid},
		{"ErrExponent", "1e3", 0, ErrInvalid},
		{"ErrSpace", " 1.00", 0, ErrInvalid},
		{"ErrPlus", "+1.00", 0, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse(%q) error = %v, want %v", tt.in, err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestArithmetic(t *testing.T) {
	a, _ := Parse("1299.99")
	got, err := a.Mul(3)
	if err != nil || got.String() != "3899.97" {
		t.Fatalf("Mul = %v, %v; want 3899.97", got, err)
	}
	sum, err := got.Add(Amount(3))
	if err != nil || sum.String() != "3900.00" {
		t.Fatalf("Add = %v, %v; want 3900.00", sum, err)
	}
	if _, err := Max.Add(1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Max+1 error = %v, want ErrTooLarge", err)
	}
	if _, err := Max.Mul(2); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Max*2 error = %v, want ErrTooLarge", err)
	}
}

func TestJSON(t *testing.T) {
	var v struct{ P Amount }
	if err := json.Unmarshal([]byte(`{"P":"10.5"}`), &v); err != nil || v.P != 1050 {
		t.Fatalf("unmarshal string: %v %d", err, v.P)
	}
	if err := json.Unmarshal([]byte(`{"P":10.5}`), &v); err == nil {
		t.Fatal("a JSON number was accepted as money")
	}
	b, _ := json.Marshal(struct{ P Amount }{1050})
	if string(b) != `{"P":"10.50"}` {
		t.Fatalf("marshal = %s", b)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"1299.99", "0", "1.", "9999999999.99", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			return
		}
		if a < 0 || a > Max {
			t.Fatalf("Parse(%q) = %d out of range", s, a)
		}
		back, err := Parse(a.String())
		if err != nil || back != a {
			t.Fatalf("round trip of %q: %v %d != %d", s, err, back, a)
		}
	})
}

// String writes cents as a decimal with two places, a sign for a negative
// amount (the sum of refunds, a difference), and the extremes whole.
func TestAmountString(t *testing.T) {
	for a, want := range map[Amount]string{
		0: "0.00", 5: "0.05", 10: "0.10", 129999: "1299.99", 100: "1.00", -1: "-0.01", -12345: "-123.45",
		math.MaxInt64: "92233720368547758.07", math.MinInt64: "-92233720368547758.08",
	} {
		if got := a.String(); got != want {
			t.Errorf("Amount(%d).String() = %q, want %q", int64(a), got, want)
		}
		if b, _ := a.MarshalJSON(); string(b) != `"`+want+`"` {
			t.Errorf("Amount(%d).MarshalJSON() = %s", int64(a), b)
		}
	}
}
