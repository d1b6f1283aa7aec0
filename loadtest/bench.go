package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BenchConfig is `make bench`: the checkout path closed-loop (clients that
// each send the next checkout as soon as the previous one answered) beside
// pgbench running the checkout's one statement with the same clients.
type BenchConfig struct {
	Warmup   time.Duration
	Single   time.Duration // the single-client phase
	Clients  int           // the concurrent phase
	Duration time.Duration
	Rounds   int // the throughput phase and pgbench's alternate this many times
	Timeout  time.Duration
	Bin      string
	Infra    Infra
	Env      map[string]string // extra settings of the services
}

func parseBenchFlags(args []string, out io.Writer) (BenchConfig, error) {
	fs := flag.NewFlagSet("loadtest bench", flag.ContinueOnError)
	fs.SetOutput(out)
	var c BenchConfig
	var env string
	fs.StringVar(&env, "env", "", "extra settings of the started services, KEY=VALUE,… (e.g. OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318)")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "single-client warm-up, not measured")
	fs.DurationVar(&c.Single, "single", 10*time.Second, "length of the single-client phase")
	fs.IntVar(&c.Clients, "clients", 16, "concurrent clients of the throughput phase (and of pgbench)")
	fs.DurationVar(&c.Duration, "duration", 16*time.Second, "length of the throughput phase (and of pgbench's), over all rounds")
	fs.IntVar(&c.Rounds, "rounds", 2, "the throughput phase and pgbench's alternate this many times, each for -duration/-rounds, so that both see the machine of the same moments")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "timeout of one checkout")
	fs.StringVar(&c.Bin, "bin", "bin", "folder of the four binaries")
	fs.StringVar(&c.Infra.PG, "pg", "postgres://postgres@localhost:5432", "PostgreSQL server (no database)")
	fs.StringVar(&c.Infra.AMQP, "amqp", "amqp://guest:guest@localhost:5672", "RabbitMQ (no vhost)")
	fs.StringVar(&c.Infra.RabbitAPI, "rabbit-api", "http://guest:guest@127.0.0.1:15672", "RabbitMQ management API (makes the scratch vhost)")
	if err := fs.Parse(args); err != nil {
		return BenchConfig{}, err
	}
	if fs.NArg() > 0 {
		return BenchConfig{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if c.Env, err = parseEnv(env); err != nil {
		return BenchConfig{}, err
	}
	if c.Single <= 0 || c.Duration <= 0 || c.Warmup < 0 || c.Clients <= 0 || c.Clients > 1024 || c.Timeout <= 0 || c.Rounds < 1 || c.Rounds > 100 ||
		c.Single > time.Hour || c.Duration > time.Hour || c.Warmup > time.Hour {
		return BenchConfig{}, errors.New("bench: need positive -single, -duration and -timeout (at most 1h), 1 to 1024 -clients and 1 to 100 -rounds")
	}
	return c, nil
}

// Phase is one closed-loop phase's outcome.
type Phase struct {
	Clients    int
	Requests   int
	Accepted   int
	Throughput float64 // accepted per second
	Latency    Dist
	Errors     []Count

	lat     []time.Duration // every request's, for joining phases
	errs    map[string]int
	seconds float64 // from the first request sent to the last answer read
}

// join is the phases together, as one phase of their summed time.
func join(ps ...Phase) Phase {
	j := Phase{errs: map[string]int{}}
	for _, p := range ps {
		j.Clients = p.Clients
		j.Requests += p.Requests
		j.Accepted += p.Accepted
		j.lat = append(j.lat, p.lat...)
		j.seconds += p.seconds
		for e, n := range p.errs {
			j.errs[e] += n
		}
	}
	j.Latency, j.Errors = distOf(j.lat), counts(j.errs)
	if j.seconds > 0 {
		j.Throughput = float64(j.Accepted) / j.seconds
	}
	return j
}

// closedLoop runs n clients back to back for d. Each client holds one
// keep-alive connection and sends the next checkout as soon as it has
// read the last answer, with a minimal HTTP/1.1 client of its own (as wrk
// does): the load generator then costs about what pgbench's client costs,
// and the machine's cores go to the path measured. Every answer is still
// read whole and checked (a 201 with an order of the customer asked for).
func closedLoop(ctx context.Context, cust *Customers, n int, d, timeout time.Duration) Phase {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	samples := make([][]Sample, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { samples[i] = client(ctx, cust, timeout) })
	}
	wg.Wait()
	p := Phase{Clients: n}
	var (
		lat         []time.Duration
		errs        = map[string]int{}
		first, last time.Time
	)
	for _, ss := range samples {
		for _, s := range ss {
			p.Requests++
			if first.IsZero() || s.At.Before(first) {
				first = s.At
			}
			last = later(last, s.At.Add(s.Latency))
			lat = append(lat, s.Latency)
			if s.OK() {
				p.Accepted++
			} else {
				errs[s.Err]++
			}
		}
	}
	p.Latency, p.Errors, p.lat, p.errs = distOf(lat), counts(errs), lat, errs
	if last.After(first) {
		p.seconds = last.Sub(first).Seconds()
		p.Throughput = float64(p.Accepted) / p.seconds
	}
	return p
}

// client is one closed-loop client of closedLoop, until ctx ends. A
// connection that fails is dialled again for the next checkout.
func client(ctx context.Context, cust *Customers, timeout time.Duration) []Sample {
	u, err := url.Parse(cust.url)
	if err != nil {
		return []Sample{{At: time.Now(), Err: err.Error()}}
	}
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: ", u.RequestURI(), u.Host)
	var (
		out  []Sample
		conn net.Conn
		br   *bufio.Reader
		req  []byte
		body []byte
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	var d net.Dialer
	for ctx.Err() == nil {
		body = cust.appendBody(body[:0], cust.next.Add(1)-1)
		req = strconv.AppendInt(append(req[:0], head...), int64(len(body)), 10)
		req = append(append(req, "\r\n\r\n"...), body...)
		s := Sample{At: time.Now()}
		var answer []byte
		if conn == nil {
			if conn, err = d.DialContext(ctx, "tcp", u.Host); err == nil {
				br = bufio.NewReaderSize(conn, 8<<10)
			} else if ctx.Err() != nil {
				break // cut off by the end of the phase before it was sent
			}
		}
		if err == nil {
			_ = conn.SetDeadline(s.At.Add(timeout))
			if _, err = conn.Write(req); err == nil {
				var resp *http.Response
				if resp, err = http.ReadResponse(br, nil); err == nil {
					s.Code = resp.StatusCode
					answer, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
					if n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 1)); n > 0 && err == nil {
						err = errors.New("an answer of more than 64 KiB") // its rest would spoil the next answer
					}
					resp.Body.Close()
					if resp.Close {
						err = errors.Join(err, conn.Close())
						conn = nil
					}
				}
			}
		}
		s.Latency = time.Since(s.At)
		if err != nil {
			s.Err = err.Error()
			if conn != nil {
				conn.Close()
				conn = nil
			}
		}
		out = append(out, cust.answer(s, answer))
	}
	return out
}

// pgbenchCheckout is what order/store.go's insertOrders writes for one
// checkout (one statement: the order, its item, its first timeline step and
// the outbox row with a payload of the real size; the service writes the
// checkouts that come together in one such statement, pgbench one per
// transaction). Its outbox row is written published, so that the order
// service's relay, up between the rounds, leaves it alone; it costs the
// same (an entry in the index of published rows instead of the one of
// unpublished rows). The order id comes from a nextval, which the service
// takes once per 32 orders (here once per order, which favours pgbench a
// little).
const pgbenchCheckout = `\set uid random(1, 1000000000)
WITH id AS (
    SELECT nextval('orders_id_seq') AS id
), o AS (
    INSERT INTO orders (id, user_id, user_email, total_amount, idempotency_key, request_hash, created_at, updated_at)
    SELECT id, :uid, 'lt' || :uid::bigint || '@example.com', 1299.99, NULL, NULL, now(), now() FROM id
), i AS (
    INSERT INTO order_items (order_id, line, product_id, quantity, price)
    SELECT id.id, t.line, t.product_id, t.quantity, t.price
    FROM id, unnest(ARRAY[1]::bigint[], ARRAY[1]::int[], ARRAY['1299.99']::numeric[]) WITH ORDINALITY AS t(product_id, quantity, price, line)
), s AS (
    INSERT INTO order_timeline (order_id, step, at) SELECT id, 'created', now() FROM id
)
INSERT INTO outbox (event_id, event_type, routing_key, payload, published_at) VALUES (gen_random_uuid(), 'OrderCreated', 'order.order.created',
    ('{"event_id":"01a21699-053f-7ccd-9ceb-8d0a765d2e70","event_type":"OrderCreated","version":1,"occurred_at":"2026-01-01T00:00:00.000000Z","order_id":1234567,"user_id":' || :uid::bigint || ',"user_email":"lt' || :uid::bigint || '@example.com","total_amount":"1299.99","items":[{"product_id":1,"quantity":1,"price":"1299.99"}]}')::json, now());
`

// runBench starts the services against scratch state, stops payment and
// email (the saga idle: OrderCreated events wait in their queue), measures
// checkout through the gateway with one client and the same client
// straight to the order service (the gateway's hop is the difference);
// then, after a VACUUM of the order service's database, cfg.Rounds rounds
// of cfg.Clients through the gateway, each followed by pgbench with the
// same statement and clients on that database; then pgbench with one
// client. The last line is for scripts.
func runBench(ctx context.Context, cfg BenchConfig, stdout, progress io.Writer) error {
	if _, err := exec.LookPath("pgbench"); err != nil {
		return errors.New("bench: pgbench is missing (apt-get install postgresql-contrib or postgresql-client)")
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", args...) }
	say("starting the four services from %s against scratch state", cfg.Bin)
	// All four start, so that every queue exists as the services declare
	// it; then the saga's two stop.
	sys, err := StartSystem(ctx, cfg.Infra, cfg.Bin, cfg.Env, "order", "payment", "email", "gateway")
	if err != nil {
		return err
	}
	defer sys.Close()
	sys.Stop("payment", "email")
	state := fmt.Sprintf("fresh scratch databases %s and vhost %s (removed at the end); services with their defaults%s; payment and email stopped (the saga idle)",
		strings.Join(sys.Databases(), ", "), sys.Tag, envText(cfg.Env))
	say("state: %s", state)

	cust := NewCustomers(Config{Target: sys.URL("gateway"), Price: "1299.99"})
	if cfg.Warmup > 0 {
		say("warming up with one client for %s", cfg.Warmup)
		closedLoop(ctx, cust, 1, cfg.Warmup, cfg.Timeout)
	}
	say("one client for %s", cfg.Single)
	single := closedLoop(ctx, cust, 1, cfg.Single, cfg.Timeout)
	// The same client straight to the order service: what the gateway's
	// hop adds is the difference.
	direct := NewCustomers(Config{Price: cust.price})
	direct.url = sys.URL("order") + "/orders"
	say("one client straight to the order service (no gateway) for %s", cfg.Single/2)
	straight := closedLoop(ctx, direct, 1, cfg.Single/2, cfg.Timeout)
	db := sys.PG + "/" + sys.Databases()[0] + "?sslmode=disable"
	if err := vacuum(ctx, sys.PG, sys.Databases()[:1]); err != nil {
		return err
	}
	script := filepath.Join(sys.Dir, "checkout.sql")
	if err := os.WriteFile(script, []byte(pgbenchCheckout), 0o644); err != nil {
		return err
	}
	// The throughput phase and pgbench's alternate, on the same database
	// (VACUUM ANALYZEd once, here), with the services up but idle while
	// pgbench runs: a machine whose speed drifts gives both the same
	// moments, and the ratio compares like with like.
	ours := []Component{fixed("gateway", sys.PID("gateway")), fixed("order", sys.PID("order")),
		named("postgres", "postgres"), named("rabbitmq", "beam.smp"), fixed("load generator", os.Getpid())}
	theirs := []Component{named("postgres", "postgres"), named("pgbench", "pgbench")}
	round := max(time.Second, (cfg.Duration / time.Duration(cfg.Rounds)).Truncate(time.Second)) // pgbench's -T is in seconds
	var (
		multis           []Phase
		pgRounds         []PgbenchResult
		multiCPU, pgCPU  CPUUse
		checkouts, pgTxs float64
	)
	for i := range cfg.Rounds {
		say("round %d of %d: %d clients for %s, then pgbench with the same statement and clients for as long", i+1, cfg.Rounds, cfg.Clients, round)
		var m Phase
		u, err := cpuOf(ctx, ours, round, func() { m = closedLoop(ctx, cust, cfg.Clients, round, cfg.Timeout) })
		if err != nil {
			return err
		}
		multis, multiCPU, checkouts = append(multis, m), addUse(multiCPU, u), checkouts+m.Throughput*u.Seconds
		var (
			r     PgbenchResult
			pgErr error
		)
		u, err = cpuOf(ctx, theirs, round, func() { r, pgErr = pgbench(ctx, db, script, cfg.Clients, round) })
		if err := errors.Join(pgErr, err); err != nil {
			return err
		}
		pgRounds, pgCPU, pgTxs = append(pgRounds, r), addUse(pgCPU, u), pgTxs+r.TPS*u.Seconds
	}
	multi := join(multis...)
	var pgMulti PgbenchResult
	for _, r := range pgRounds {
		pgMulti.TPS += r.TPS / float64(len(pgRounds))
		pgMulti.LatencyMS += r.LatencyMS / float64(len(pgRounds))
	}
	sys.Stop("gateway", "order")
	pgSingleFor := min(cfg.Single, 5*time.Second)
	say("pgbench, 1 client for %s", pgSingleFor)
	pgSingle, err := pgbench(ctx, db, script, 1, pgSingleFor)
	if err != nil {
		return err
	}

	p := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	p("")
	p("== make bench: the checkout path through the gateway beside pgbench (%d CPUs, load average %s) ==", runtime.NumCPU(), machine().LoadAvg)
	p("state: %s", state)
	for _, ph := range []Phase{single, multi} {
		line := fmt.Sprintf("checkout, %2d client(s): %6d requests, %7.1f/s, p50 %s, p90 %s, p99 %s, max %s",
			ph.Clients, ph.Requests, ph.Throughput, fmtMS(ph.Latency.P50), fmtMS(ph.Latency.P90), fmtMS(ph.Latency.P99), fmtMS(ph.Latency.Max))
		if len(ph.Errors) > 0 {
			line += ", errors: " + joinCounts(ph.Errors, 3)
		}
		p("%s", line)
	}
	p("order service straight, 1 client: %6d requests, %7.1f/s, p50 %s, p90 %s (the gateway's hop adds %s at p50)",
		straight.Requests, straight.Throughput, fmtMS(straight.Latency.P50), fmtMS(straight.Latency.P90), fmtMS(single.Latency.P50-straight.Latency.P50))
	for i := range multis {
		p("round %d: checkout %7.1f/s, pgbench %7.1f tps: %.2f", i+1, multis[i].Throughput, pgRounds[i].TPS, multis[i].Throughput/pgRounds[i].TPS)
	}
	p("pgbench,  %2d client(s): %7.1f tps, latency average %s (the rounds' mean)", cfg.Clients, pgMulti.TPS, fmtMS(pgMulti.LatencyMS))
	p("pgbench,   1 client(s): %7.1f tps, latency average %s", pgSingle.TPS, fmtMS(pgSingle.LatencyMS))
	p("CPU per checkout, %d clients: %s", cfg.Clients, perUnit(multiCPU, checkouts, ours))
	p("CPU per pgbench transaction, %d clients: %s", cfg.Clients, perUnit(pgCPU, pgTxs, theirs))
	ratio := 0.0
	if pgMulti.TPS > 0 {
		ratio = multi.Throughput / pgMulti.TPS
	}
	p("ratio, %d clients: %.2f of pgbench's throughput (goal >= 0.5: %s); single-client p50 %s (goal <= 1 ms: %s)",
		cfg.Clients, ratio, metIf(ratio >= 0.5), fmtMS(single.Latency.P50), metIf(single.Latency.P50 <= 1))
	p("BENCH single_p50_ms=%.3f single_p99_ms=%.3f straight_p50_ms=%.3f clients=%d throughput=%.1f multi_p99_ms=%.3f pgbench_tps=%.1f ratio=%.3f errors=%d",
		single.Latency.P50, single.Latency.P99, straight.Latency.P50, multi.Clients, multi.Throughput, multi.Latency.P99, pgMulti.TPS, ratio,
		single.Requests-single.Accepted+straight.Requests-straight.Accepted+multi.Requests-multi.Accepted)
	if single.Accepted == 0 || straight.Accepted == 0 || multi.Accepted == 0 {
		return errors.New("bench: no checkout was accepted")
	}
	return nil
}

// addUse is two CPU windows together.
func addUse(a, b CPUUse) CPUUse {
	s := CPUUse{Seconds: a.Seconds + b.Seconds, MS: map[string]float64{}, Rest: a.Rest + b.Rest, Gone: a.Gone + b.Gone}
	for _, u := range []CPUUse{a, b} {
		for k, v := range u.MS {
			s.MS[k] += v
		}
	}
	return s
}

// cpuOf runs run, which takes about d, and returns what the components'
// processes used in a window inside it (from a tenth of d to nine tenths):
// the steady state, with processes that run starts (database backends)
// already there and not yet gone.
func cpuOf(ctx context.Context, cs []Component, d time.Duration, run func()) (CPUUse, error) {
	done := make(chan struct{})
	go func() { defer close(done); run() }()
	defer func() { <-done }()
	start := time.Now()
	if !sleepUntil(ctx, start.Add(d/10)) {
		return CPUUse{}, ctx.Err()
	}
	a, err := sampleCPU(cs)
	if err != nil {
		return CPUUse{}, err
	}
	if !sleepUntil(ctx, start.Add(d*9/10)) {
		return CPUUse{}, ctx.Err()
	}
	b, err := sampleCPU(cs)
	if err != nil {
		return CPUUse{}, err
	}
	return cpuBetween(a, b), nil
}

// perUnit is a CPU window divided by what was done in it, in ms, the
// components in the order of cs, then the rest of the machine and the sum.
func perUnit(u CPUUse, n float64, cs []Component) string {
	if n <= 0 {
		return "nothing done"
	}
	var parts []string
	sum := u.Rest
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s %.3f", c.Name, u.MS[c.Name]/n))
		sum += u.MS[c.Name]
	}
	parts = append(parts, fmt.Sprintf("rest of the machine %.3f", u.Rest/n))
	return fmt.Sprintf("%.3f ms (%s)", sum/n, strings.Join(parts, ", "))
}

// PgbenchResult is what pgbench printed.
type PgbenchResult struct {
	TPS       float64
	LatencyMS float64
}

func pgbench(ctx context.Context, db, script string, clients int, d time.Duration) (PgbenchResult, error) {
	jobs := min(clients, runtime.NumCPU())
	out, err := exec.CommandContext(ctx, "pgbench", "-n", "-M", "prepared", "-c", fmt.Sprint(clients), "-j", fmt.Sprint(jobs),
		"-T", fmt.Sprint(max(1, int(d.Seconds()))), "-f", script, db).CombinedOutput()
	if err != nil {
		return PgbenchResult{}, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	var r PgbenchResult
	for _, l := range strings.Split(string(out), "\n") {
		if _, err := fmt.Sscanf(l, "tps = %f", &r.TPS); err == nil {
			continue
		}
		_, _ = fmt.Sscanf(l, "latency average = %f ms", &r.LatencyMS)
	}
	if r.TPS == 0 {
		return r, fmt.Errorf("pgbench: no tps in its output:\n%s", out)
	}
	return r, nil
}
