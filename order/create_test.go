package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/checkout-demo/checkout/internal/batch"
	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
)

// checkoutFor is a one-item order of user, the same for the same user.
func checkoutFor(user int64) NewOrder {
	price, _ := money.Parse("10.00")
	return NewOrder{UserID: user, UserEmail: fmt.Sprintf("u%d@example.com", user), Items: []Item{{ProductID: 1, Quantity: 1, Price: price}}, Total: price}
}

// transactions counts the distinct transactions that wrote the orders
// (their rows' xmin).
func (s *Store) transactions(t *testing.T) (orders, commits int) {
	t.Helper()
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT xmin::text) FROM orders`).Scan(&orders, &commits); err != nil {
		t.Fatal(err)
	}
	return orders, commits
}

// Checkouts that come while another one's write is under way share one
// transaction (one round trip, one commit and one WAL flush for many):
// under load the database's cost per checkout falls, and each still gets
// its own order, its own answer and its own event.
func TestConcurrentCheckoutsShareCommits(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	const n = 48
	start := make(chan struct{})
	ids := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			o, replayed, err := s.Create(context.Background(), checkoutFor(int64(i+1)), fmt.Sprintf("key-%d", i))
			if err == nil && replayed {
				err = errors.New("a new checkout was answered as a replay")
			}
			ids[i], errs[i] = o.ID, err
		})
	}
	close(start)
	wg.Wait()
	seen := map[int64]bool{}
	for i := range n {
		if errs[i] != nil || ids[i] <= 0 || seen[ids[i]] {
			t.Fatalf("checkout %d: id %d, %v (ids so far %v)", i, ids[i], errs[i], seen)
		}
		seen[ids[i]] = true
	}
	orders, commits := s.transactions(t)
	if orders != n {
		t.Fatalf("%d orders written, want %d", orders, n)
	}
	var events, mine int
	if err := s.pool.QueryRow(context.Background(), `
		SELECT count(*), count(*) FILTER (WHERE (payload->>'order_id')::bigint = o.id AND payload->>'user_email' = o.user_email)
		FROM outbox JOIN orders o ON o.id = (payload->>'order_id')::bigint`).Scan(&events, &mine); err != nil {
		t.Fatal(err)
	}
	if events != n || mine != n {
		t.Fatalf("%d OrderCreated rows (%d of them their own order's), want %d", events, mine, n)
	}
	if commits > n/2 {
		t.Fatalf("%d concurrent checkouts took %d transactions: they did not share commits", n, commits)
	}
}

// A checkout the database refuses inside a shared transaction (its
// Idempotency-Key was taken meanwhile by another request) fails alone: the
// others of its batch are written, and the one that reused the key with the
// same request gets the first order back.
func TestCheckoutRefusalStaysItsOwn(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	first, _, err := s.Create(context.Background(), checkoutFor(1), "taken")
	if err != nil {
		t.Fatal(err)
	}
	// Hold the next write until the four below wait behind it, so that
	// they go together in the batch after it.
	s.init()
	run := s.creates.Run
	hold, held := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var sizes []int
	s.creates.Run = func(ctx context.Context, args []newRows) ([]batch.Result[struct{}], error) {
		once.Do(func() { close(held); <-hold })
		mu.Lock()
		sizes = append(sizes, len(args))
		mu.Unlock()
		return run(ctx, args)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, _, err := s.Create(context.Background(), checkoutFor(2), "holder"); err != nil {
			t.Error(err)
		}
	})
	<-held
	type outcome struct {
		o        Order
		replayed bool
		err      error
	}
	cases := []struct {
		user int64
		key  string
	}{{3, "fresh-3"}, {1, "taken"}, {4, "taken"}, {5, "fresh-5"}}
	got := make([]outcome, len(cases))
	for i, c := range cases {
		wg.Go(func() {
			o, replayed, err := s.Create(context.Background(), checkoutFor(c.user), c.key)
			got[i] = outcome{o, replayed, err}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		queued := s.creates.Queued()
		if queued == len(cases) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d checkouts queued behind the held one, want %d", queued, len(cases))
		}
	}
	close(hold)
	wg.Wait()
	for _, i := range []int{0, 3} {
		if got[i].err != nil || got[i].replayed || got[i].o.UserID != cases[i].user {
			t.Fatalf("checkout %d beside the refused one: %+v", i, got[i])
		}
	}
	if got[1].err != nil || !got[1].replayed || got[1].o.ID != first.ID {
		t.Fatalf("the same request again with its key: %+v, want the first order %d replayed", got[1], first.ID)
	}
	if !errors.Is(got[2].err, ErrKeyReused) {
		t.Fatalf("another request with a taken key: %v, want ErrKeyReused", got[2].err)
	}
	if orders, _ := s.transactions(t); orders != 4 {
		t.Fatalf("%d orders, want 4 (the first, the holder's and the two fresh ones)", orders)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) < 2 || sizes[1] != len(cases) {
		t.Fatalf("batch sizes %v: the four checkouts did not share a batch after the held one", sizes)
	}
}

// BenchmarkInsertArgs is the order service's side of writing five
// checkouts in one statement: insertArgs, and pgx encoding them for the
// statement as the server described it (what conn.Exec does before it
// sends; the server's side is in make bench).
func BenchmarkInsertArgs(b *testing.B) {
	store := testStore(b)
	ctx := context.Background()
	conn, err := store.pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	sd, err := conn.Conn().Prepare(ctx, "", insertOrders)
	if err != nil {
		b.Fatal(err)
	}
	price, _ := money.Parse("1299.99")
	rs := make([]newRows, 5)
	for i := range rs {
		user := int64(1_000_000 + i)
		o := Order{ID: int64(100 + i), UserID: user, UserEmail: fmt.Sprintf("lt%d@example.com", user), TotalAmount: price,
			Items: []Item{{ProductID: 1, Quantity: 1, Price: price}}, CreatedAt: time.Now(), TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}
		body, _ := json.Marshal(o)
		rs[i] = newRows{o: o, key: "gw-0196a2b0-1234-7abc-8def-0123456789ab", requestHash: strings.Repeat("3f", 32),
			nonce: make([]byte, 16), tokenHash: make([]byte, 32),
			event: events.Message{ID: "0196a2b0-1234-7abc-8def-0123456789ab", Type: "OrderCreated", RoutingKey: "order.order.created", Body: body,
				TraceContext: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	}
	b.ReportAllocs()
	for b.Loop() {
		var eqb pgx.ExtendedQueryBuilder
		if err := eqb.Build(conn.Conn().TypeMap(), sd, insertArgs(rs)); err != nil {
			b.Fatal(err)
		}
	}
}
