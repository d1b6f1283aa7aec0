// Package money holds amounts of money as whole cents, so that no amount is
// ever a float. On the wire and in Postgres an amount is a decimal string with
// two places ("1299.99"); numeric(12,2) bounds it.
package money

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"
)

// Amount is an amount of money in cents.
type Amount int64

// Max is the largest amount a numeric(12,2) column holds.
const Max Amount = 999_999_999_999

// ErrInvalid is returned for text that is not a non-negative decimal with at
// most two places.
var ErrInvalid = errors.New("must be a non-negative decimal string with at most two decimal places")

// ErrTooLarge is returned when an amount does not fit numeric(12,2).
var ErrTooLarge = errors.New("amount is too large")

// Parse reads a non-negative decimal string with at most two decimal places,
// such as "1299.99", "5" or "0.5".
func Parse(s string) (Amount, error) {
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || len(frac) > 2 || (hasDot && frac == "") || !digits(whole) || !digits(frac) {
		return 0, ErrInvalid
	}
	if len(strings.TrimLeft(whole, "0")) > 10 {
		return 0, ErrTooLarge
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, ErrInvalid
	}
	var f int64
	if frac != "" {
		f, _ = strconv.ParseInt(frac, 10, 64)
		if len(frac) == 1 {
			f *= 10
		}
	}
	a := Amount(w*100 + f)
	if a > Max {
		return 0, ErrTooLarge
	}
	return a, nil
}

func digits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Mul returns a*n, or ErrTooLarge when the product does not fit numeric(12,2).
func (a Amount) Mul(n int64) (Amount, error) {
	if n < 0 || a < 0 {
		return 0, ErrInvalid
	}
	if n != 0 && a > Max/Amount(n) {
		return 0, ErrTooLarge
	}
	return a * Amount(n), nil
}

// Add returns a+b, or ErrTooLarge when the sum does not fit numeric(12,2).
func (a Amount) Add(b Amount) (Amount, error) {
	if a+b > Max {
		return 0, ErrTooLarge
	}
	return a + b, nil
}

// String formats the amount with exactly two decimal places.
func (a Amount) String() string {
	return string(a.appendTo(make([]byte, 0, 24)))
}

// appendTo adds the amount's String to b: on every event and statement
// argument, so without fmt.
func (a Amount) appendTo(b []byte) []byte {
	u := uint64(a)
	if a < 0 {
		b, u = append(b, '-'), uint64(-a) // -MinInt64 wraps to its own magnitude
	}
	b = strconv.AppendUint(b, u/100, 10)
	cents := u % 100
	return append(b, '.', byte('0'+cents/10), byte('0'+cents%10))
}

// MarshalJSON writes the amount as a decimal string.
func (a Amount) MarshalJSON() ([]byte, error) {
	b := append(make([]byte, 0, 26), '"')
	return append(a.appendTo(b), '"'), nil
}

// UnmarshalJSON reads a decimal string; a JSON number is refused so that no
// amount ever passes through a float.
func (a *Amount) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return ErrInvalid
	}
	v, err := Parse(s[1 : len(s)-1])
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Value lets database/sql write the amount into a numeric column.
func (a Amount) Value() (driver.Value, error) { return a.String(), nil }

// NumericValue lets pgx write the amount into a numeric column in its
// binary format directly (pgtype.NumericValuer). Without it pgx takes
// Value's string, fails to encode it as binary, parses it and encodes
// again: some thirty allocations for every amount of every statement.
func (a Amount) NumericValue() (pgtype.Numeric, error) {
	return pgtype.Numeric{Int: big.NewInt(int64(a)), Exp: -2, Valid: true}, nil
}

// Scan reads a numeric column (as text) into the amount.
func (a *Amount) Scan(src any) error {
	var s string
	switch v := src.(type) {
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return fmt.Errorf("money: cannot scan %T", src)
	}
	v, err := Parse(s)
	if err != nil {
		return fmt.Errorf("money: scan %q: %w", s, err)
	}
	*a = v
	return nil
}
