package worker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
)

// GET / says what the service consumes and publishes, read from the
// contract's topology.
func TestHandleAbout(t *testing.T) {
	r := chi.NewRouter()
	r.Method(http.MethodGet, "/", HandleAbout("payment", r))
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	var a web.About
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Consumes) != 1 || a.Consumes[0].Queue != events.QueuePayment ||
		!slices.Equal(a.Consumes[0].RoutingKeys, events.QueueBindings(events.QueuePayment)) {
		t.Errorf("consumes %+v, want %s with its bindings", a.Consumes, events.QueuePayment)
	}
	if want := []string{events.RoutePaymentFailed, events.RoutePaymentProcessed, events.RoutePaymentRefunded}; !slices.Equal(a.Publishes, want) {
		t.Errorf("publishes %v, want %v", a.Publishes, want)
	}
}

// `dlq list` prints the dead-letter queue's count and a table of what it
// holds; `dlq replay` moves the messages back onto the queue (their attempt
// count reset, their replays counted) and says how many; anything else is a
// usage error.
func TestDeadLettersCommand(t *testing.T) {
	url := testenv.VHost(t)
	const queue = "test.cli"
	ch := testenv.Channel(t, url)
	for _, q := range []string{queue, events.DeadLetterQueue(queue)} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", events.DeadLetterQueue(queue), true, false, amqp.Publishing{
		MessageId: "ev-1", Type: "Thing", Body: []byte(`{}`), Headers: amqp.Table{
			events.HeaderAttempt: int32(3), events.HeaderError: "boom", events.HeaderFailedAt: "2026-01-02T03:04:05Z",
			events.HeaderRoutingKey: "test.thing.happened",
		}})
	if err != nil || !dc.Wait() {
		t.Fatalf("publish the dead letter: %v", err)
	}
	run := func(args ...string) (string, error) {
		var out strings.Builder
		err := deadLetters(context.Background(), args, url, queue, &out)
		return out.String(), err
	}

	out, err := run("list")
	want := "test.cli.dlq: 1 message(s)\n" +
		"EVENT ID  TYPE   ROUTING KEY          ATTEMPTS  FAILED AT             REASON\n" +
		"ev-1      Thing  test.thing.happened  3         2026-01-02T03:04:05Z  boom\n"
	if err != nil || out != want {
		t.Fatalf("dlq list = %q, %v; want %q", out, err, want)
	}
	if out, err := run("list", "-n", "0"); err != nil || out != "test.cli.dlq: 1 message(s)\nEVENT ID  TYPE  ROUTING KEY  ATTEMPTS  FAILED AT  REASON\n" {
		t.Fatalf("dlq list -n 0 = %q, %v; want the count and an empty table", out, err)
	}
	for _, args := range [][]string{nil, {"purge"}, {"list", "-x"}} {
		if out, err := run(args...); err == nil || out != "" {
			t.Errorf("dlq %v = %q, %v; want a usage error and no output", args, out, err)
		}
	}

	if out, err := run("replay"); err != nil || out != "replayed 1 message(s) from test.cli.dlq to test.cli\n" {
		t.Fatalf("dlq replay = %q, %v", out, err)
	}
	var d amqp.Delivery
	for deadline := time.Now().Add(10 * time.Second); ; {
		var ok bool
		if d, ok, err = ch.Get(queue, true); err != nil || ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replayed message is not on the queue")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || d.MessageId != "ev-1" || d.Headers[events.HeaderReplayed] != int32(1) || d.Headers[events.HeaderAttempt] != nil {
		t.Fatalf("replayed message %s (headers %v), %v; want ev-1 replayed once, no attempt count", d.MessageId, d.Headers, err)
	}
	if out, err := run("list"); err != nil || !strings.HasPrefix(out, "test.cli.dlq: 0 message(s)\n") {
		t.Fatalf("dlq list after the replay = %q, %v", out, err)
	}
}
