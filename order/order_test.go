package main

import (
	"strings"
	"testing"

	"github.com/checkout-demo/checkout/internal/money"
)

func FuzzDecodeNewOrder(f *testing.F) {
	for _, s := range []string{
		seedBody,
		`{"user_id":1,"user_email":"a@b.co","items":[{"product_id":1,"quantity":3,"price":"0.1"},{"product_id":2,"quantity":1,"price":"5"}]}`,
		`{"user_id":1,"user_email":"a@b.co","items":[{"product_id":1,"quantity":10000,"price":"9999999999.99"}]}`,
		`{"user_id":-1}`, `[]`, `{"items":null}`, `{"user_id":1e3}`, ``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		o, err := DecodeNewOrder(strings.NewReader(body))
		if err != nil {
			return
		}
		// Whatever is accepted is a well-formed order whose total is the sum
		// of its lines.
		if o.UserID <= 0 || !validEmail(o.UserEmail) || len(o.Items) == 0 || len(o.Items) > MaxItems {
			t.Fatalf("accepted invalid order %+v from %q", o, body)
		}
		var sum money.Amount
		for _, it := range o.Items {
			if it.ProductID <= 0 || it.Quantity <= 0 || it.Quantity > MaxQuantity || it.Price < 0 {
				t.Fatalf("accepted invalid item %+v from %q", it, body)
			}
			sum += it.Price * money.Amount(it.Quantity)
		}
		if sum != o.Total || o.Total > money.Max {
			t.Fatalf("total %v, lines sum to %v, from %q", o.Total, sum, body)
		}
	})
}

func TestDecodeNewOrderTotal(t *testing.T) {
	o, err := DecodeNewOrder(strings.NewReader(`{"user_id":1,"user_email":"a@b.co","items":[{"product_id":1,"quantity":3,"price":"0.10"},{"product_id":2,"quantity":1,"price":"0.20"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	// 0.1*3 + 0.2 is 0.5 exactly; in float64 it is 0.5000000000000001.
	if o.Total.String() != "0.50" {
		t.Fatalf("total = %s, want 0.50", o.Total)
	}
}
