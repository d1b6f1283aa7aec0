package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/order/migrations"
)

// instance is one running order service, started through run as main does.
type instance struct {
	URL   string
	DBURL string
}

// startService runs the service on port 0 against the given database and
// broker, waits until /readyz answers 200, and stops it when the test ends.
func startService(t *testing.T, dbURL, amqpURL string, opts ...func(*Config)) instance {
	t.Helper()
	cfg := Config{
		Port: "0", DatabaseURL: dbURL, AMQPURL: amqpURL, DBMaxConns: 4,
		OutboxPoll: 200 * time.Millisecond, OutboxBatch: 100, RequestTimeout: 30 * time.Second,
		ShutdownTimeout: 5 * time.Second, LogLevel: "warn",
	}
	for _, o := range opts {
		o(&cfg)
	}
	base := testenv.Run(t, func(ctx context.Context, listening func(net.Addr)) error {
		return run(ctx, cfg, io.Discard, listening)
	})
	testenv.WaitHTTP(t, base+"/readyz", 30*time.Second)
	return instance{URL: base, DBURL: dbURL}
}

func post(t *testing.T, url, body string) (*http.Response, []byte) {
	t.Helper()
	return testenv.Send(t, http.MethodPost, url, nil, body)
}

func count(t *testing.T, dbURL, query string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

const seedBody = `{"user_id":1,"user_email":"test@example.com","items":[{"product_id":1,"quantity":1,"price":"1299.99"}]}`

func TestCheckout(t *testing.T) {
	t.Parallel()
	amqpURL := testenv.VHost(t)
	svc := startService(t, testenv.Database(t), amqpURL)
	q := testenv.Watch(t, amqpURL, events.RouteOrderCreated)

	// The client's total is ignored: the server computes 2*10.05 + 3*0.30.
	body := `{"user_id":7,"user_email":"buyer@example.com","total_amount":"1.00",
		"items":[{"product_id":3,"quantity":2,"price":"10.05"},{"product_id":4,"quantity":3,"price":"0.3"}]}`
	resp, b := post(t, svc.URL+"/orders", body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status = %d, body %s", resp.StatusCode, b)
	}
	var o Order
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if o.ID <= 0 || o.UserID != 7 || o.UserEmail != "buyer@example.com" || o.Status != "pending" ||
		o.TotalAmount.String() != "21.00" || len(o.Items) != 2 || o.ProcessingDurationMS == nil || o.CreatedAt.IsZero() {
		t.Fatalf("unexpected order: %s", b)
	}
	if !strings.Contains(string(b), `"total_amount":"21.00"`) || !strings.Contains(string(b), `"price":"0.30"`) {
		t.Fatalf("money is not written as decimal strings: %s", b)
	}
	if loc := resp.Header.Get("Location"); loc != fmt.Sprintf("/orders/%d", o.ID) {
		t.Fatalf("Location = %q", loc)
	}

	msgs := q.Next(1, 10*time.Second)
	q.None(300 * time.Millisecond)
	m := msgs[0]
	if m.DeliveryMode != amqp.Persistent || m.ContentType != "application/json" || m.Type != "OrderCreated" || m.MessageId == "" {
		t.Fatalf("message properties: mode=%d type=%q content=%q id=%q", m.DeliveryMode, m.Type, m.ContentType, m.MessageId)
	}
	var ev events.OrderCreated
	if err := json.Unmarshal(m.Body, &ev); err != nil {
		t.Fatalf("decode event: %v", err)
	}
	if ev.EventID != m.MessageId || ev.OrderID != o.ID || ev.UserID != 7 || ev.UserEmail != "buyer@example.com" ||
		ev.TotalAmount != o.TotalAmount || !slices.Equal(ev.Items, o.Items) || ev.Version != events.Version {
		t.Fatalf("event does not match order: %s", m.Body)
	}
	// The relay marks the row on its next claim, or on its own within
	// its MarkDelay.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := count(t, svc.DBURL, `SELECT count(*) FROM outbox WHERE published_at IS NOT NULL`)
		if n == 1 {
			break
		}
		if n > 1 || time.Now().After(deadline) {
			t.Fatalf("published outbox rows = %d, want 1", n)
		}
	}

	var o2 Order
	testenv.GetJSON(t, fmt.Sprintf("%s/orders/%d", svc.URL, o.ID), bearer(o.AccessToken), &o2)
	if o2.ID != o.ID || o2.TotalAmount != o.TotalAmount || !slices.Equal(o2.Items, o.Items) || o2.Status != "pending" ||
		len(o2.Timeline) != 1 || o2.Timeline[0].Step != StepCreated {
		t.Fatalf("GET returned %+v, created %+v", o2, o)
	}
}

func TestCheckoutBadInput(t *testing.T) {
	t.Parallel()
	item := func(s string) string {
		return `{"user_id":1,"user_email":"a@example.com","items":[` + s + `]}`
	}
	many := strings.TrimSuffix(strings.Repeat(`{"product_id":1,"quantity":1,"price":"1.00"},`, MaxItems+1), ",")
	tests := []badInput{
		{"ErrMalformedJSON", "application/json", `{"user_id":1,`, 400, ""},
		{"ErrNotAnObject", "application/json", `[1,2]`, 400, ""},
		{"ErrTrailingData", "application/json", seedBody + `{}`, 400, ""},
		{"ErrWrongContentType", "text/plain", seedBody, 415, ""},
		{"ErrUserIDString", "application/json", `{"user_id":"1","user_email":"a@example.com","items":[]}`, 400, "user_id"},
		{"ErrMissingUserID", "application/json", `{"user_email":"a@example.com","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 422, "user_id"},
		{"ErrZeroUserID", "application/json", `{"user_id":0,"user_email":"a@example.com","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 422, "user_id"},
		{"ErrMissingEmail", "application/json", `{"user_id":1,"items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 422, "user_email"},
		{"ErrInvalidEmail", "application/json", `{"user_id":1,"user_email":"not-an-email","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 422, "user_email"},
		{"ErrEmailWithName", "application/json", `{"user_id":1,"user_email":"Bob <bob@example.com>","items":[{"product_id":1,"quantity":1,"price":"1.00"}]}`, 422, "user_email"},
		{"ErrEmptyItems", "application/json", item(``), 422, "items"},
		{"ErrMissingItems", "application/json", `{"user_id":1,"user_email":"a@example.com"}`, 422, "items"},
		{"ErrTooManyItems", "application/json", item(many), 422, "items"},
		{"ErrZeroProductID", "application/json", item(`{"product_id":0,"quantity":1,"price":"1.00"}`), 422, "items[0].product_id"},
		{"ErrNegativeQuantity", "application/json", item(`{"product_id":1,"quantity":-2,"price":"1.00"}`), 422, "items[0].quantity"},
		{"ErrZeroQuantity", "application/json", item(`{"product_id":1,"quantity":0,"price":"1.00"}`), 422, "items[0].quantity"},
		{"ErrFractionalQuantity", "application/json", item(`{"product_id":1,"quantity":1.5,"price":"1.00"}`), 400, "items.quantity"},
		{"ErrPriceNumber", "application/json", item(`{"product_id":1,"quantity":1,"price":12.5}`), 422, "items[0].price"},
		{"ErrPriceThreePlaces", "application/json", item(`{"product_id":1,"quantity":1,"price":"1.999"}`), 422, "items[0].price"},
		{"ErrPriceNegative", "application/json", item(`{"product_id":1,"quantity":1,"price":"-1.00"}`), 422, "items[0].price"},
		{"ErrPriceMissing", "application/json", item(`{"product_id":1,"quantity":1}`), 422, "items[0].price"},
		{"ErrSecondItem", "application/json", item(`{"product_id":1,"quantity":1,"price":"1.00"},{"product_id":2,"quantity":1,"price":"abc"}`), 422, "items[1].price"},
		{"ErrTotalTooLarge", "application/json", item(`{"product_id":1,"quantity":10000,"price":"9999999999.99"}`), 422, "items"},
		{"ErrBodyTooLarge", "application/json", `{"user_id":1,"user_email":"a@example.com","pad":"` + strings.Repeat("x", MaxBodySize) + `"}`, 413, ""},
	}
	refuses(t, tests)
}

func TestGetOrderErrors(t *testing.T) {
	t.Parallel()
	svc := startService(t, testenv.Database(t), testenv.VHost(t))
	for path, want := range map[string]int{"/orders/999999": 404, "/orders/abc": 400, "/orders/-1": 400, "/nope": 404} {
		req, _ := http.NewRequest(http.MethodGet, svc.URL+path, nil)
		req.Header.Set("Authorization", "Bearer some-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || resp.Header.Get("Content-Type") != web.ProblemContentType {
			t.Errorf("GET %s = %d %s, want %d problem+json", path, resp.StatusCode, resp.Header.Get("Content-Type"), want)
		}
	}
}

// A request stuck behind the database (here a table lock held by someone
// else, as a long migration would) gets a 503 problem after
// REQUEST_TIMEOUT instead of hanging, and the service serves again once the
// lock is gone.
func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	svc := startService(t, testenv.Database(t), testenv.VHost(t), func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	resp, b := post(t, svc.URL+"/orders", seedBody)
	var o Order
	if err := json.Unmarshal(b, &o); resp.StatusCode != http.StatusCreated || err != nil {
		t.Fatalf("checkout: %d %s", resp.StatusCode, b)
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, svc.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE orders IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 20 * time.Second}
	for _, req := range []struct{ method, path, body string }{
		{"GET", fmt.Sprintf("/orders/%d", o.ID), ""},
		{"POST", "/orders", seedBody},
	} {
		r, _ := http.NewRequest(req.method, svc.URL+req.path, strings.NewReader(req.body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+o.AccessToken)
		resp, err := client.Do(r)
		if err != nil {
			t.Fatalf("%s %s behind a lock: %v (no answer)", req.method, req.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Content-Type") != web.ProblemContentType {
			t.Fatalf("%s %s behind a lock = %d %s, want a 503 problem", req.method, req.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, svc.DBURL, `SELECT count(*) FROM orders`); n != 1 {
		t.Fatalf("orders = %d after a timed-out checkout, want 1", n)
	}
	resp, b = post(t, svc.URL+"/orders", seedBody)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("checkout after the lock: %d %s", resp.StatusCode, b)
	}
}

// While RabbitMQ is unreachable checkouts still answer 201; once it is back
// every event arrives, without restarting the service.
func TestCheckoutWhileBrokerDown(t *testing.T) {
	t.Parallel()
	amqpURL := testenv.VHost(t)
	proxy := testenv.NewProxy(t, testenv.BrokerAddr())
	q := testenv.Watch(t, amqpURL, events.RouteOrderCreated) // declares the exchange and binds first
	svc := startService(t, testenv.Database(t), proxy.URL(amqpURL))

	proxy.Cut()
	const n = 20
	ids := map[int64]bool{}
	for range n {
		resp, b := post(t, svc.URL+"/orders", seedBody)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("checkout with the broker down: %d %s", resp.StatusCode, b)
		}
		var o Order
		_ = json.Unmarshal(b, &o)
		ids[o.ID] = true
	}
	q.None(time.Second)
	if pending := count(t, svc.DBURL, `SELECT count(*) FROM outbox WHERE published_at IS NULL`); pending != n {
		t.Fatalf("unpublished outbox rows = %d, want %d", pending, n)
	}

	proxy.Restore()
	for _, m := range q.Next(n, 30*time.Second) {
		var ev events.OrderCreated
		if err := json.Unmarshal(m.Body, &ev); err != nil {
			t.Fatal(err)
		}
		if !ids[ev.OrderID] {
			t.Fatalf("unexpected or repeated order %d", ev.OrderID)
		}
		delete(ids, ev.OrderID)
	}
	q.None(500 * time.Millisecond)
}

// Replicas that start together against a fresh database all come up: the
// database is created once and the migrations run once, under a lock.
func TestConcurrentStartMigratesOnce(t *testing.T) {
	t.Parallel()
	base := testenv.Database(t)
	dbURL := strings.Replace(base, "/test_", "/fresh_", 1) // does not exist yet
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), testenv.PostgresURL)
		if err == nil {
			defer conn.Close(context.Background())
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+dbURL[strings.LastIndex(dbURL, "/")+1:strings.Index(dbURL, "?")]+" WITH (FORCE)")
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			db, err := postgres.Open(dbURL, 2)
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs <- db.Prepare(ctx, migrations.FS, testLogger(t))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("prepare: %v", err)
		}
	}
	files, _ := fs.Glob(migrations.FS, "*.sql")
	applied := count(t, dbURL, `SELECT count(*) FROM goose_db_version WHERE version_id > 0`)
	distinct := count(t, dbURL, `SELECT count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0`)
	if applied != len(files) || distinct != len(files) {
		t.Fatalf("%d migrations applied (%d distinct), want each of the %d once", applied, distinct, len(files))
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return web.NewLogger(&testWriter{t}, "warn", "json", "order")
}

type testWriter struct{ t testing.TB }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

func postWithKey(t *testing.T, url, key, body string) (*http.Response, Order) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(IdempotencyKeyHeader, key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return nil, Order{}
	}
	defer resp.Body.Close()
	var o Order
	_ = json.NewDecoder(resp.Body).Decode(&o)
	return resp, o
}

// A retried checkout with the same Idempotency-Key gets the order it already
// placed; nothing is written or published twice.
func TestCheckoutIdempotencyKey(t *testing.T) {
	t.Parallel()
	amqpURL := testenv.VHost(t)
	svc := startService(t, testenv.Database(t), amqpURL)
	q := testenv.Watch(t, amqpURL, events.RouteOrderCreated)
	url := svc.URL + "/orders"

	first, a := postWithKey(t, url, "retry-me-1", seedBody)
	again, b := postWithKey(t, url, "retry-me-1", seedBody)
	if first.StatusCode != 201 || again.StatusCode != 201 || a.ID == 0 || b.ID != a.ID {
		t.Fatalf("first %d id %d, retry %d id %d", first.StatusCode, a.ID, again.StatusCode, b.ID)
	}
	if first.Header.Get("Idempotent-Replayed") != "" || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("Idempotent-Replayed: first %q, retry %q", first.Header.Get("Idempotent-Replayed"), again.Header.Get("Idempotent-Replayed"))
	}

	// Concurrent retries race for the key: one order.
	ids := make(chan int64, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			resp, o := postWithKey(t, url, "racing-key", seedBody)
			if resp != nil && resp.StatusCode == 201 {
				ids <- o.ID
			}
		})
	}
	wg.Wait()
	close(ids)
	answers, distinct := 0, map[int64]bool{}
	for id := range ids {
		answers++
		distinct[id] = true
	}
	if answers != 8 || len(distinct) != 1 {
		t.Fatalf("concurrent retries: %d answers naming orders %v, want 8 naming one", answers, distinct)
	}

	other := strings.Replace(seedBody, `"quantity":1`, `"quantity":2`, 1)
	if resp, _ := postWithKey(t, url, "retry-me-1", other); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("reused key with another body = %d, want 422", resp.StatusCode)
	}
	if resp, _ := postWithKey(t, url, strings.Repeat("k", 256), seedBody); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("overlong key = %d, want 400", resp.StatusCode)
	}
	if resp, _ := postWithKey(t, url, "", seedBody); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("empty key = %d, want 400", resp.StatusCode)
	}
	if n := count(t, svc.DBURL, `SELECT count(*) FROM orders`); n != 2 {
		t.Fatalf("%d orders, want 2", n)
	}
	q.Next(2, 10*time.Second)
	q.None(500 * time.Millisecond)
}

// badInput is a checkout body (of contentType) that the service refuses
// with status and a problem naming field (unless field is empty).
type badInput struct {
	name, contentType, body string
	status                  int
	field                   string
}

// refuses starts a service of its own, posts each bad input to it and
// fails unless it is refused with a problem+json of its status, with a
// detail, naming its field; and unless nothing was then written to the
// database or published. It returns the service.
func refuses(t *testing.T, tests []badInput) instance {
	t.Helper()
	amqpURL := testenv.VHost(t)
	svc := startService(t, testenv.Database(t), amqpURL)
	q := testenv.Watch(t, amqpURL, "#")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Post(svc.URL+"/orders", tt.contentType, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p web.Problem
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatalf("decode problem (status %d): %v", resp.StatusCode, err)
			}
			if resp.StatusCode != tt.status || p.Status != tt.status {
				t.Fatalf("status = %d (problem %d), want %d: %+v", resp.StatusCode, p.Status, tt.status, p)
			}
			if ct := resp.Header.Get("Content-Type"); ct != web.ProblemContentType {
				t.Fatalf("Content-Type = %q", ct)
			}
			if p.Detail == "" {
				t.Fatal("problem without detail")
			}
			if tt.field != "" && !slices.ContainsFunc(p.Errors, func(f web.FieldError) bool { return f.Field == tt.field }) {
				t.Fatalf("problem does not name %q: %+v", tt.field, p)
			}
		})
	}
	for _, table := range []string{"orders", "order_items", "outbox"} {
		if n := count(t, svc.DBURL, "SELECT count(*) FROM "+table); n != 0 {
			t.Errorf("%s has %d rows after bad input only", table, n)
		}
	}
	q.None(500 * time.Millisecond)
	return svc
}
