package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// faultConfig comes from the environment so that `make test` runs a short
// form and `make fault` the long one.
type faultConfig struct {
	Rate     int           // checkouts per second
	Duration time.Duration // of the load
	Outage   time.Duration // how long the broker and the database stay away
	// Real restarts RabbitMQ (rabbitmqctl stop_app/start_app) and PostgreSQL
	// (pg_ctlcluster) instead of cutting the services off through proxies.
	// It disturbs everything else on the machine: only `make fault` sets it.
	Real bool
}

func loadFaultConfig(t *testing.T) faultConfig {
	c := faultConfig{Rate: 15, Duration: 30 * time.Second, Outage: 5 * time.Second}
	if v := os.Getenv("FAULT_RATE"); v != "" {
		c.Rate, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("FAULT_DURATION"); v != "" {
		c.Duration, _ = time.ParseDuration(v)
	}
	if v := os.Getenv("FAULT_OUTAGE"); v != "" {
		c.Outage, _ = time.ParseDuration(v)
	}
	c.Real = os.Getenv("FAULT_REAL_RESTARTS") == "1"
	if c.Rate <= 0 || c.Duration <= 0 {
		t.Fatalf("bad FAULT_RATE or FAULT_DURATION: %+v", c)
	}
	return c
}

// faultLog records what was injected when.
type faultLog struct {
	mu      sync.Mutex
	entries []string
	kills   map[string]int
	// brokerOutages are when the broker went away and came back.
	brokerOutages [][2]time.Time
}

func (f *faultLog) add(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

// TestFault runs the four services under a steady checkout load and, while
// it runs, kills every service with SIGKILL and starts it again, takes the
// broker and the database away and brings them back, and cuts the database
// connections. Then it lets the system settle and reconciles: no accepted
// order lost, every order paid (or declined) exactly once, none left
// pending, no charge of the provider's without its payment row, every
// customer mailed, duplicate mails at most the number of email-service kills.
func TestFault(t *testing.T) {
	testenv.Long(t)
	t.Parallel()
	cfg := loadFaultConfig(t)
	vhost := testenv.VHost(t)
	brokerProxy := testenv.NewProxy(t, testenv.BrokerAddr())
	dbProxy := testenv.NewProxy(t, testenv.PostgresAddr())
	s := NewSystem(t, brokerProxy.URL(vhost))
	for k, v := range map[string]string{"PAYMENT_DELAY": "300ms", "EMAIL_DELAY": "300ms"} {
		s.Env[k] = v
	}
	s.ServiceEnv["order"] = map[string]string{"DATABASE_URL": dbProxy.URL(s.OrderDB)}
	s.ServiceEnv["payment"] = map[string]string{"DATABASE_URL": dbProxy.URL(s.PaymentDB)}

	// An audit queue of our own, durable so it outlives a broker restart,
	// counts every payment result the system publishes.
	audit := declareAudit(t, vhost)

	s.Up()

	fl := &faultLog{kills: map[string]int{}}
	kill := func(name string) func() {
		return func() {
			s.Kill(name)
			fl.mu.Lock()
			fl.kills[name]++
			fl.mu.Unlock()
			fl.add("SIGKILL %s", name)
			time.Sleep(500 * time.Millisecond)
			s.Start(name)
			s.WaitReady(name, 60*time.Second)
			fl.add("%s ready again", name)
		}
	}
	brokerOutage := func() {
		down := time.Now()
		fl.add("broker down for %v", cfg.Outage)
		if cfg.Real {
			run(t, "rabbitmqctl", "stop_app")
		} else {
			brokerProxy.Cut()
		}
		time.Sleep(cfg.Outage)
		if cfg.Real {
			run(t, "rabbitmqctl", "start_app")
		} else {
			brokerProxy.Restore()
		}
		fl.mu.Lock()
		fl.brokerOutages = append(fl.brokerOutages, [2]time.Time{down, time.Now()})
		fl.mu.Unlock()
		fl.add("broker back")
	}
	dbOutage := func() {
		fl.add("database down for %v", cfg.Outage/2)
		if cfg.Real {
			cluster := pgCluster(t)
			run(t, "pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "stop", "-m", "fast")
			time.Sleep(cfg.Outage / 2)
			run(t, "pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "start")
		} else {
			dbProxy.Cut()
			time.Sleep(cfg.Outage / 2)
			dbProxy.Restore()
		}
		fl.add("database back")
	}
	terminate := func() {
		n := terminateBackends(t, s)
		fl.add("pg_terminate_backend: %d connections cut", n)
	}
	faults := []func(){
		kill("payment"), kill("order"), brokerOutage, kill("email"), terminate,
		kill("gateway"), dbOutage, kill("payment"), kill("email"), brokerOutage, kill("order"),
	}

	ctx, stopLoad := context.WithTimeout(context.Background(), cfg.Duration)
	defer stopLoad()
	load := startLoad(ctx, s, cfg.Rate)

	// Space the faults so that all of them fall within the load: the
	// outages take their own time (a real broker restart adds seconds).
	busy := 2*cfg.Outage + cfg.Outage/2 + time.Duration(len(faults))*time.Second
	if cfg.Real {
		busy += 3 * 8 * time.Second
	}
	pause := max(time.Second, (cfg.Duration-busy)/time.Duration(len(faults)+1))
	for _, f := range faults {
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		f()
	}
	<-ctx.Done()
	res := load.wait()
	// A few more checkouts after the last fault: the system must accept
	// and finish them too.
	for i := range 5 {
		o := checkout(t, s, 900000+i, fmt.Sprintf("after-%d@example.com", i), "3.00")
		res.accepted[o.ID] = fmt.Sprintf("after-%d@example.com", i)
	}

	settle(t, s, len(res.accepted), 3*time.Minute)
	r := reconcile(t, s, res, audit, fl)
	t.Logf("fault run: %d checkouts sent at %d/s for %v, %d faults injected\n%s\n%s",
		res.sent, cfg.Rate, cfg.Duration, len(faults), strings.Join(fl.entries, "\n"), r)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func pgCluster(t *testing.T) string {
	entries, err := os.ReadDir("/etc/postgresql")
	if err != nil || len(entries) == 0 {
		t.Fatalf("no PostgreSQL cluster in /etc/postgresql: %v", err)
	}
	return entries[len(entries)-1].Name()
}

func declareAudit(t *testing.T, vhost string) string {
	t.Helper()
	ch := testenv.Channel(t, vhost)
	if err := events.DeclareExchange(ch); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("test.audit", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{events.RoutePaymentProcessed, events.RoutePaymentFailed, events.RoutePaymentRefunded, events.RouteOrderCancelled} {
		if err := ch.QueueBind(q.Name, k, events.Exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	return vhost
}

// terminateBackends cuts every connection of the system's two databases.
func terminateBackends(t *testing.T, s *System) int {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.PostgresURL)
	if err != nil {
		t.Logf("terminate backends: %v", err)
		return 0
	}
	defer conn.Close(ctx)
	names := []string{dbName(s.OrderDB), dbName(s.PaymentDB)}
	var n int
	_ = conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ANY($1)`, names).Scan(&n)
	return n
}

func dbName(url string) string {
	name := url[strings.LastIndex(url, "/")+1:]
	name, _, _ = strings.Cut(name, "?")
	return name
}

type loadResult struct {
	sent     int
	accepted map[int64]string // order id → customer
	declined map[int64]bool
	codes    map[string]int
}

type loader struct {
	mu   sync.Mutex
	res  loadResult
	wg   sync.WaitGroup
	done chan struct{}
}

// startLoad sends rate checkouts per second until ctx ends, each with a
// customer of its own; one in ten is over the payment limit.
func startLoad(ctx context.Context, s *System, rate int) *loader {
	l := &loader{res: loadResult{accepted: map[int64]string{}, declined: map[int64]bool{}, codes: map[string]int{}}, done: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second}
	sem := make(chan struct{}, 64)
	go func() {
		defer close(l.done)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // saturated: skip this tick rather than pile up
			}
			price, declined := "19.99", seq%10 == 0
			if declined {
				price = "10000.01"
			}
			email := fmt.Sprintf("f%d@example.com", seq)
			body := fmt.Sprintf(`{"user_id":%d,"user_email":%q,"items":[{"product_id":1,"quantity":1,"price":%q}]}`, seq, email, price)
			l.wg.Go(func() {
				defer func() { <-sem }()
				code, b := post(client, s.URL("gateway")+"/api/checkout", body)
				l.mu.Lock()
				defer l.mu.Unlock()
				l.res.sent++
				l.res.codes[code]++
				if code != "201" {
					return
				}
				var o struct {
					ID int64 `json:"id"`
				}
				if json.Unmarshal(b, &o) == nil && o.ID > 0 {
					l.res.accepted[o.ID] = email
					if declined {
						l.res.declined[o.ID] = true
					}
				}
			})
		}
	}()
	return l
}

func (l *loader) wait() loadResult {
	<-l.done
	l.wg.Wait()
	return l.res
}

func post(client *http.Client, url, body string) (string, []byte) {
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return "error", nil
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return strconv.Itoa(resp.StatusCode), []byte(b.String())
}

// settle waits until every order in the database has settled: it ended
// (paid, payment failed or cancelled) and has its mail step.
func settle(t *testing.T, s *System, accepted int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		total := queryInt(t, s.OrderDB, `SELECT count(*) FROM orders`)
		done := queryInt(t, s.OrderDB, `SELECT count(*) FROM orders WHERE settled`)
		if total >= accepted && done == total {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("not settled after %v: %d of %d orders finished", timeout, done, total)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func reconcile(t *testing.T, s *System, res loadResult, vhost string, fl *faultLog) string {
	t.Helper()
	ctx := context.Background()
	orders := map[int64]struct {
		email, status string
	}{}
	odb, err := pgx.Connect(ctx, s.OrderDB)
	if err != nil {
		t.Fatal(err)
	}
	defer odb.Close(ctx)
	rows, _ := odb.Query(ctx, `SELECT id, user_email, status FROM orders`)
	for rows.Next() {
		var id int64
		var e, st string
		if err := rows.Scan(&id, &e, &st); err != nil {
			t.Fatal(err)
		}
		orders[id] = struct{ email, status string }{e, st}
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}

	pdb, err := pgx.Connect(ctx, s.PaymentDB)
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close(ctx)
	payments := map[int64]int{}
	paymentStatus := map[int64]string{}
	rows, _ = pdb.Query(ctx, `SELECT order_id, status FROM payments`)
	for rows.Next() {
		var id int64
		var st string
		if err := rows.Scan(&id, &st); err != nil {
			t.Fatal(err)
		}
		payments[id]++
		paymentStatus[id] = st
	}

	// Payment results on the wire: distinct events per order, and raw
	// deliveries (a relay that crashed after publishing publishes again).
	eventsPerOrder, deliveries := drainAudit(t, vhost)

	// Money: every charge the provider made has its payment row (succeeded,
	// or refunded), and refunds are counted.
	var chargedWithoutRow, refunds int
	if err := pdb.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE l.approved AND (p.status IS NULL OR p.status NOT IN ('succeeded', 'refunded'))),
		       count(*) FILTER (WHERE l.refunded_at IS NOT NULL)
		FROM provider_ledger l LEFT JOIN payments p ON p.order_id = l.key`).Scan(&chargedWithoutRow, &refunds); err != nil {
		t.Fatal(err)
	}

	mails := map[string]int{}
	for _, m := range s.Mailpit.Messages(t) {
		for _, to := range m.To {
			mails[strings.ToLower(to.Address)]++
		}
	}

	var lost, unpaid, doublePaid, doubleEvent, republished, wrongStatus, unmailed, dupMails, unacknowledged, pending, cancelled int
	var dupTo []string
	for id := range res.accepted {
		if _, ok := orders[id]; !ok {
			lost++
		}
	}
	for id, o := range orders {
		if _, ok := res.accepted[id]; !ok {
			unacknowledged++ // committed, but the client never heard (a kill mid-answer)
		}
		switch payments[id] {
		case 0:
			unpaid++
		case 1:
		default:
			doublePaid++
		}
		// One kind of result per order; the saga asking again may have the
		// result published more than once, each with a new event id.
		ev, ps := eventsPerOrder[id], paymentStatus[id]
		switch {
		case ev.processed > 0 && ev.failed > 0, ps == "succeeded" && ev.processed == 0, ps == "declined" && ev.failed == 0:
			doubleEvent++
		case ev.processed+ev.failed > 1:
			republished += ev.processed + ev.failed - 1
		}
		switch o.status {
		case "pending":
			pending++
		case "cancelled":
			cancelled++
		}
		if !(o.status == "paid" && ps == "succeeded") && !(o.status == "payment_failed" && ps == "declined") &&
			!(o.status == "cancelled" && (ps == "refunded" || ps == "cancelled" || ps == "declined")) {
			wrongStatus++
		}
		switch n := mails[strings.ToLower(o.email)]; {
		case n == 0:
			unmailed++
		case n > 1:
			dupMails += n - 1
			if len(dupTo) < 10 {
				dupTo = append(dupTo, fmt.Sprintf("%s (order %d) ×%d", o.email, id, n))
			}
		}
	}
	fl.mu.Lock()
	emailKills := fl.kills["email"]
	recovery := brokerRecovery(t, s, fl.brokerOutages)
	fl.mu.Unlock()

	codes := make([]string, 0, len(res.codes))
	for c, n := range res.codes {
		codes = append(codes, fmt.Sprintf("%s×%d", c, n))
	}
	sort.Strings(codes)
	report := fmt.Sprintf(`reconciliation:
  checkouts sent               %d (%s)
  accepted (201)               %d, of them %d over the payment limit
  orders in the database       %d (%d committed without the client hearing back)
  accepted orders lost         %d
  orders without a payment     %d
  orders paid twice            %d
  orders whose payment result was published as more or less than one event  %d (raw deliveries: %d; results published again on a re-ask: %d)
  orders in the wrong status   %d
  orders still pending         %d
  orders cancelled             %d
  charges without a row        %d
  refunds for late charges     %d
  customers without a mail     %d
  duplicate mails              %d (email-service kills: %d) %s
  backlog paid after broker came back: %s`,
		res.sent, strings.Join(codes, " "), len(res.accepted), len(res.declined), len(orders), unacknowledged,
		lost, unpaid, doublePaid, doubleEvent, deliveries, republished, wrongStatus, pending, cancelled, chargedWithoutRow, refunds, unmailed, dupMails, emailKills, strings.Join(dupTo, ", "), recovery)

	if lost > 0 || unpaid > 0 || doublePaid > 0 || doubleEvent > 0 || wrongStatus > 0 || unmailed > 0 || dupMails > emailKills ||
		pending > 0 || chargedWithoutRow > 0 {
		t.Errorf("the system lost or doubled work:\n%s", report)
	}
	if len(res.accepted) < 10 {
		t.Errorf("only %d checkouts accepted; the load did not run", len(res.accepted))
	}
	return report
}

// audited is what the audit queue saw for one order: distinct events by kind.
type audited struct{ processed, failed, refunded, cancelled int }

func drainAudit(t *testing.T, vhost string) (map[int64]audited, int) {
	t.Helper()
	ch := testenv.Channel(t, vhost)
	seen := map[string]bool{}
	perOrder := map[int64]audited{}
	n := 0
	for {
		d, ok, err := ch.Get("test.audit", true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return perOrder, n
		}
		n++
		if seen[d.MessageId] {
			continue
		}
		seen[d.MessageId] = true
		var ev struct {
			OrderID int64 `json:"order_id"`
		}
		if err := json.Unmarshal(d.Body, &ev); err != nil {
			t.Fatal(err)
		}
		a := perOrder[ev.OrderID]
		switch d.Type {
		case events.TypePaymentProcessed:
			a.processed++
		case events.TypePaymentFailed:
			a.failed++
		case events.TypePaymentRefunded:
			a.refunded++
		case events.TypeOrderCancelled:
			a.cancelled++
		}
		perOrder[ev.OrderID] = a
	}
}

// brokerRecovery says, for each broker outage, how long after the broker
// came back the last order placed during the outage was paid: the time the
// system took to work off the backlog the outage left.
func brokerRecovery(t *testing.T, s *System, outages [][2]time.Time) string {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.OrderDB)
	if err != nil {
		return "unknown"
	}
	defer conn.Close(ctx)
	var parts []string
	for _, o := range outages {
		down, back := o[0], o[1]
		var (
			last   *time.Time
			orders int
		)
		err := conn.QueryRow(ctx, `
			SELECT max(p.at), count(*) FROM order_timeline p
			JOIN orders o ON o.id = p.order_id
			WHERE p.step IN ('paid', 'payment_failed') AND o.created_at BETWEEN $1 AND $2`, down, back).Scan(&last, &orders)
		switch {
		case err != nil:
			parts = append(parts, "unknown")
		case orders == 0:
			parts = append(parts, "no orders during the outage")
		default:
			parts = append(parts, fmt.Sprintf("%.1fs (%d orders placed during the outage)", max(last.Sub(back).Seconds(), 0), orders))
		}
	}
	return strings.Join(parts, ", ")
}
