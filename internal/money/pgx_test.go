package money

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// An amount goes to a numeric column in pgx's binary format directly: no
// failed encode (pgx's fallback for a driver.Valuer's string builds an
// error, parses the string back and encodes again, on every statement).
// It comes back through Scan, with Parse's rules.
func TestAmountNumericBinary(t *testing.T) {
	m := pgtype.NewMap()
	for _, s := range []string{"0.00", "0.05", "12.34", "1000000.00", "9999999999.99"} {
		a, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		buf, err := m.Encode(pgtype.NumericOID, pgtype.BinaryFormatCode, a, nil)
		if err != nil {
			t.Fatalf("encode %s: %v", s, err)
		}
		var n pgtype.Numeric
		if err := m.Scan(pgtype.NumericOID, pgtype.BinaryFormatCode, buf, &n); err != nil {
			t.Fatal(err)
		}
		if txt, _ := n.MarshalJSON(); string(txt) != s && !(s == "0.00" && string(txt) == "0") {
			t.Fatalf("%s went as %s", s, txt)
		}
		var back Amount
		if err := m.Scan(pgtype.NumericOID, pgtype.BinaryFormatCode, buf, &back); err != nil || back != a {
			t.Fatalf("%s came back as %v (%v)", s, back, err)
		}
	}
	// What is no amount is refused, not rounded or wrapped.
	for _, s := range []string{"-1.00", "0.005", "10000000000.00", "NaN"} {
		var n pgtype.Numeric
		if err := n.Scan(s); err != nil {
			t.Fatal(err)
		}
		buf, err := m.Encode(pgtype.NumericOID, pgtype.BinaryFormatCode, n, nil)
		if err != nil {
			t.Fatal(err)
		}
		var a Amount
		if err := m.Scan(pgtype.NumericOID, pgtype.BinaryFormatCode, buf, &a); err == nil {
			t.Fatalf("%s was read as the amount %v", s, a)
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := m.Encode(pgtype.NumericOID, pgtype.BinaryFormatCode, Amount(1234), nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 20 { // 13 with pgx v5.12 (big.Int arithmetic); 31 through the Valuer's string
		t.Fatalf("encoding an amount allocates %v times: not the direct binary path", allocs)
	}
}
