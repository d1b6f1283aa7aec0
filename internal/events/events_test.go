package events

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/money"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The wire format is a contract between services that deploy separately:
// these golden files make every change to it a deliberate act.
func TestWireFormat(t *testing.T) {
	at := time.Date(2025, 12, 21, 21, 35, 38, 569861000, time.UTC)
	meta := func(typ string) Meta {
		return Meta{EventID: "0193e7c4-5c1e-7a2b-9d3f-1a2b3c4d5e6f", EventType: typ, Version: Version, OccurredAt: at}
	}
	items := []Item{{ProductID: 1, Quantity: 1, Price: money.Amount(129999)}}
	tests := []struct {
		file  string
		event Event
		into  Event
	}{
		{"order_created.json", OrderCreated{Meta: meta(TypeOrderCreated), OrderID: 1, UserID: 1, UserEmail: "test@example.com", TotalAmount: 129999, Items: items}, &OrderCreated{}},
		{"payment_processed.json", PaymentProcessed{Meta: meta(TypePaymentProcessed), PaymentID: 5, OrderID: 1, UserID: 1, UserEmail: "test@example.com", TotalAmount: 129999, Items: items}, &PaymentProcessed{}},
		{"payment_failed.json", PaymentFailed{Meta: meta(TypePaymentFailed), PaymentID: 6, OrderID: 2, UserID: 1, UserEmail: "test@example.com", TotalAmount: 1500000, Items: items, Reason: "amount exceeds 10000.00"}, &PaymentFailed{}},
		{"order_cancelled.json", OrderCancelled{Meta: meta(TypeOrderCancelled), OrderID: 3, UserID: 1, UserEmail: "test@example.com", TotalAmount: 129999, Reason: "no payment result after 3 tries"}, &OrderCancelled{}},
		{"payment_refunded.json", PaymentRefunded{Meta: meta(TypePaymentRefunded), PaymentID: 7, OrderID: 3, TotalAmount: 129999, Reason: "order cancelled"}, &PaymentRefunded{}},
		{"email_failed.json", EmailFailed{Meta: meta(TypeEmailFailed), OrderID: 1, Kind: MailConfirmation, To: "test@example.com", MessageID: "order-1.order_confirmation@checkout.local", Reason: "550 5.1.1 mailbox unavailable"}, &EmailFailed{}},
		{"email_sent.json", EmailSent{Meta: meta(TypeEmailSent), OrderID: 1, Kind: MailConfirmation, To: "test@example.com", MessageID: "order-1.order_confirmation@checkout.local"}, &EmailSent{}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			m, err := Encode(tt.event)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := json.Indent(&got, m.Body, "", "  "); err != nil {
				t.Fatal(err)
			}
			got.WriteByte('\n')
			path := filepath.Join("testdata", tt.file)
			if *update {
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/events -update to create it)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("wire format of %s changed:\n got: %s\nwant: %s", m.Type, got.Bytes(), want)
			}
			if err := json.Unmarshal(want, tt.into); err != nil {
				t.Fatalf("decode golden: %v", err)
			}
			if back := reflect.ValueOf(tt.into).Elem().Interface(); !reflect.DeepEqual(back, tt.event) {
				t.Fatalf("golden decodes to %+v, want %+v", back, tt.event)
			}
			if m.ID != tt.event.EventMeta().EventID || m.RoutingKey != tt.event.RoutingKey() || m.Type != tt.event.EventMeta().EventType {
				t.Fatalf("message header fields: %+v", m)
			}
		})
	}
}

func TestEncodeRefusesEventWithoutID(t *testing.T) {
	if _, err := Encode(OrderCreated{}); err == nil {
		t.Fatal("an event without id was encoded")
	}
}

func TestNewMetaUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		m := NewMeta(TypeOrderCreated, time.Now())
		if seen[m.EventID] || m.Version != Version {
			t.Fatalf("repeated or unversioned meta %+v", m)
		}
		seen[m.EventID] = true
	}
}
