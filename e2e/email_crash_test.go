package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// The email service is SIGKILLed in the middle of a burst of mails (as when
// a backlog drains after a broker outage): many mails are then accepted by
// SMTP but not yet acked. After the restart every customer has a mail, and
// at most one (the one whose record the kill may have beaten) has two.
// EMAIL_ACCEPT_CONCURRENCY=1 holds the final step at one mail whatever the
// reply time: by default it opens when 300 mails at the server's reply
// time (slower behind the harness's proxy, on a loaded machine) would not
// finish one at a time within the budget, and a kill may then double as
// many mails as it was open to (its own test is in the email package).
func TestEmailKilledMidBurst(t *testing.T) {
	testenv.Long(t)
	t.Parallel()
	const n = 300
	s := NewSystem(t, "")
	s.Env["EMAIL_DELAY"] = "300ms"
	s.Env["EMAIL_ACCEPT_CONCURRENCY"] = "1"
	s.Start("email")
	s.WaitReady("email", 60*time.Second) // its queue exists now
	s.Kill("email")

	// A backlog: every message is delivered at once when email comes back.
	var msgs []events.Message
	for i := range n {
		ev := events.PaymentProcessed{Meta: events.NewMeta(events.TypePaymentProcessed, time.Now()), PaymentID: int64(i + 1),
			OrderID: int64(i + 1), UserID: int64(i + 1), UserEmail: fmt.Sprintf("burst%d@example.com", i),
			TotalAmount: 500, Items: []events.Item{{ProductID: 1, Quantity: 1, Price: 500}}}
		m, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	testenv.PublishAll(t, testenv.Channel(t, s.AMQPURL), msgs)

	s.Start("email")
	mailed := func() map[string]int {
		out := map[string]int{}
		for _, m := range s.Mailpit.Messages(t) {
			for _, to := range m.To {
				out[strings.ToLower(to.Address)]++
			}
		}
		return out
	}
	// Kill at the first mail: the burst is then in full swing.
	total := func() int {
		resp, err := http.Get(s.Mailpit.URL + "/api/v1/messages?limit=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var page struct {
			Total int `json:"total"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
			t.Fatal(err)
		}
		return page.Total
	}
	deadline := time.Now().Add(60 * time.Second)
	for total() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the burst did not start")
		}
		time.Sleep(2 * time.Millisecond)
	}
	s.Kill("email")
	before := total()
	s.Start("email")

	deadline = time.Now().Add(90 * time.Second)
	for {
		got := mailed()
		if len(got) == n {
			dups := 0
			for _, c := range got {
				dups += c - 1
			}
			t.Logf("killed after %d of %d mails; %d duplicates after the restart", before, n, dups)
			if dups > 1 {
				t.Fatalf("%d duplicate mails from one kill, want at most 1", dups)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d customers got a mail", len(got), n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
