package main

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/checkout-demo/checkout/internal/batch"
	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/order/migrations"
)

func testStore(t testing.TB) *Store {
	t.Helper()
	db, err := postgres.Open(testenv.Database(t), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := &Store{pool: db.Pool, timeout: 10 * time.Second}
	if err := db.Prepare(ctx, migrations.FS, testLogger(t), store.checkIDBlock); err != nil {
		t.Fatal(err)
	}
	return store
}

func (s *Store) testOrder(t *testing.T, email string) Order {
	t.Helper()
	price, _ := money.Parse("10.00")
	o, _, err := s.Create(context.Background(), NewOrder{UserID: 7, UserEmail: email, Items: []Item{{ProductID: 1, Quantity: 1, Price: price}}, Total: price}, "")
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func paidStep(o Order) SagaEvent {
	return SagaEvent{EventID: uuid.NewString(), EventType: "PaymentProcessed", OrderID: o.ID, To: StatusPaid, Step: StepPaid,
		At: time.Now(), Payer: &Payer{UserID: o.UserID, UserEmail: o.UserEmail, Amount: o.TotalAmount}}
}

// batchSizes wraps s's advance batches (the service's settings, set up by
// init) to record how many steps each held; sizes returns them so far.
func batchSizes(s *Store) (sizes func() []int) {
	var (
		mu   sync.Mutex
		seen []int
	)
	s.init()
	run := s.advances.Run
	s.advances.Run = func(ctx context.Context, es []SagaEvent) ([]batch.Result[advanced], error) {
		mu.Lock()
		seen = append(seen, len(es))
		mu.Unlock()
		return run(ctx, es)
	}
	return func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// Several steps in one advance_orders call each get the outcome they get
// alone: applied, a duplicate of one in the same batch, an unknown order, a
// payer that is not the order's (which changes nothing), a mail step; and
// the errors of some do not undo the others.
func TestAdvanceStepsTogether(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	a, b, c := s.testOrder(t, "a@example.com"), s.testOrder(t, "b@example.com"), s.testOrder(t, "c@example.com")
	paidA := paidStep(a)
	wrongB := paidStep(b)
	wrongB.Payer.UserEmail = "someone@example.com"
	unknown := paidStep(c)
	unknown.OrderID = c.ID + 1000
	mailC := SagaEvent{EventID: uuid.NewString(), EventType: "EmailSent", OrderID: c.ID, Step: StepConfirmationSent, At: time.Now()}
	steps := []SagaEvent{mailC, paidA, wrongB, paidA, unknown, paidStep(c)}

	results, err := s.advanceBatch(context.Background(), steps)
	if err != nil || len(results) != len(steps) {
		t.Fatalf("advanceBatch: %d results, %v", len(results), err)
	}
	code := func(i int) string {
		var pe interface{ SQLState() string }
		if errors.As(results[i].Err, &pe) {
			return pe.SQLState()
		}
		return ""
	}
	if r := results[0]; r.Err != nil || !r.Out.fresh || !r.Out.applied {
		t.Errorf("the mail step: %+v", r)
	}
	if r := results[1]; r.Err != nil || !r.Out.fresh || !r.Out.applied || r.Out.created == nil || !r.Out.created.Equal(a.CreatedAt) {
		t.Errorf("the payment of a: %+v", r)
	}
	if code(2) != "CK001" {
		t.Errorf("the payment of b by someone else: %+v, want CK001", results[2])
	}
	if r := results[3]; r.Err != nil || r.Out.fresh || r.Out.applied {
		t.Errorf("the payment of a again (same event): %+v, want not fresh", r)
	}
	if code(4) != "P0002" {
		t.Errorf("an unknown order: %+v, want P0002", results[4])
	}
	if r := results[5]; r.Err != nil || !r.Out.applied {
		t.Errorf("the payment of c: %+v", r)
	}
	ctx := context.Background()
	for _, tt := range []struct {
		o       Order
		status  string
		steps   int
		settled bool
	}{{a, StatusPaid, 2, false}, {b, StatusPending, 1, false}, {c, StatusPaid, 3, true}} {
		got, err := s.Get(ctx, tt.o.ID)
		var settled bool
		if err == nil {
			err = s.pool.QueryRow(ctx, `SELECT settled FROM orders WHERE id = $1`, tt.o.ID).Scan(&settled)
		}
		if err != nil || got.Status != tt.status || len(got.Timeline) != tt.steps || settled != tt.settled {
			t.Errorf("order %s: %s %v settled %v (%v), want %s with %d steps, settled %v",
				tt.o.UserEmail, got.Status, got.steps(), settled, err, tt.status, tt.steps, tt.settled)
		}
	}
	var claimed int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM inbox WHERE event_id = ANY($1::uuid[])`,
		[]string{wrongB.EventID, unknown.EventID}).Scan(&claimed); err != nil || claimed != 0 {
		t.Errorf("refused steps left %d inbox claims (%v), want none", claimed, err)
	}
}

// Concurrent Advance calls (a burst of deliveries) each get their own
// outcome through the batches: every order paid once, the errors theirs,
// and batches of several steps formed.
func TestAdvanceConcurrentCallers(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	sizes := batchSizes(s)
	const n = 40
	orders := make([]Order, n)
	for i := range orders {
		orders[i] = s.testOrder(t, "x@example.com")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for _, o := range orders {
		wg.Go(func() {
			if applied, err := s.Advance(context.Background(), paidStep(o)); err != nil || !applied {
				errs <- errors.Join(err, errors.New("a payment was not applied"))
			}
		})
		wg.Go(func() {
			e := paidStep(o)
			e.OrderID = -o.ID
			if _, err := s.Advance(context.Background(), e); !errors.Is(err, ErrNotFound) {
				errs <- errors.Join(err, errors.New("an unknown order was not ErrNotFound"))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var paid int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM orders WHERE status = 'paid'`).Scan(&paid); err != nil || paid != n {
		t.Fatalf("%d orders paid (%v), want %d", paid, err, n)
	}
	if largest := slices.Max(append(sizes(), 0)); largest < 2 {
		t.Fatalf("no batch held more than %d step: the callers did not share round trips", largest)
	}
}

// A step the database refuses with an error advance_orders does not catch
// (here a status the orders table's CHECK refuses) fails only its own
// delivery: the batch it rolled back runs again one step at a time. The
// three steps come together (a long Gather), so they do share a batch.
func TestAdvanceRefusalStaysItsOwn(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	recorded := batchSizes(s)
	s.advances.Gather = time.Second // long enough for the three
	a, b, c := s.testOrder(t, "a@example.com"), s.testOrder(t, "b@example.com"), s.testOrder(t, "c@example.com")
	bogus := paidStep(b)
	bogus.To = "bogus"
	steps := []SagaEvent{paidStep(a), bogus, paidStep(c)}
	applied := make([]bool, len(steps))
	errs := make([]error, len(steps))
	var wg sync.WaitGroup
	for i, e := range steps {
		wg.Go(func() { applied[i], errs[i] = s.Advance(context.Background(), e) })
	}
	wg.Wait()
	var pe interface{ SQLState() string }
	if !errors.As(errs[1], &pe) || pe.SQLState() != "23514" {
		t.Fatalf("the refused step: %v, want its check violation", errs[1])
	}
	for _, i := range []int{0, 2} {
		if errs[i] != nil || !applied[i] {
			t.Fatalf("step %d beside the refused one: applied %v, %v", i, applied[i], errs[i])
		}
	}
	if sizes := recorded(); len(sizes) == 0 || sizes[0] != 3 {
		t.Fatalf("batch sizes %v: the three steps did not share a batch first", sizes)
	}
}

// Steps that keep coming, each a little after the last (deliveries spread
// out at a steady rate, not the burst of one read), share a batch: after
// the first, which goes at once, they wait out the Store's linger together
// (one statement, one commit and one ack for many instead of one each).
func TestAdvanceLingerGathersStepsThatKeepComing(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	s.linger = 400 * time.Millisecond
	recorded := batchSizes(s)
	const n = 6
	steps := make([]SagaEvent, n)
	for i := range steps {
		steps[i] = paidStep(s.testOrder(t, "spread@example.com"))
	}
	errs := make([]error, n)
	applied := make([]bool, n)
	// The first comes after an idle spell and goes alone; the rest come
	// 20 ms apart right after it.
	applied[0], errs[0] = s.Advance(context.Background(), steps[0])
	var wg sync.WaitGroup
	for i, e := range steps[1:] {
		wg.Go(func() { applied[i+1], errs[i+1] = s.Advance(context.Background(), e) })
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	for i := range steps {
		if errs[i] != nil || !applied[i] {
			t.Fatalf("step %d: applied %v, %v", i, applied[i], errs[i])
		}
	}
	sizes := recorded()
	if len(sizes) == 0 || sizes[0] != 1 {
		t.Fatalf("batch sizes %v: the first step after an idle spell did not go at once and alone", sizes)
	}
	if len(sizes) > 3 {
		t.Fatalf("batch sizes %v: %d steps 20 ms apart took %d batches with a 400 ms linger", sizes, n, len(sizes))
	}
}

// A batch that holds every caller there can be (the consumer's handlers)
// goes at once: with all of them waiting, lingering would only cap the
// service at a batch per linger (at 32 per 100 ms, 160 orders/s: the
// saga's queue fell behind at 194/s in make knee).
func TestAdvanceDoesNotLingerWithEveryCallerInHand(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	s.linger, s.callers = time.Hour, 3
	recorded := batchSizes(s)
	if _, err := s.Advance(context.Background(), paidStep(s.testOrder(t, "first@example.com"))); err != nil {
		t.Fatal(err)
	}
	steps := []SagaEvent{paidStep(s.testOrder(t, "a@example.com")), paidStep(s.testOrder(t, "b@example.com")), paidStep(s.testOrder(t, "c@example.com"))}
	done := make(chan error, len(steps))
	for _, e := range steps {
		go func() { _, err := s.Advance(context.Background(), e); done <- err }()
	}
	for range steps {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("three steps with three callers at most still waiting after a minute (batches %v): the full batch lingered", recorded())
		}
	}
	if got := recorded(); !slices.Equal(got, []int{1, 3}) {
		t.Fatalf("batch sizes %v, want [1 3]", got)
	}
}
