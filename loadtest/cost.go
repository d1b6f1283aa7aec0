package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// CostReport is `make cost`: CPU per order by component, the work per
// order (transactions, row operations, messages, mails), and the floor —
// the same work done by minimal clients of the same PostgreSQL, RabbitMQ
// and Mailpit — measured the same way in the same run.
type CostReport struct {
	State  string    `json:"state"` // what the run started from
	Rate   int       `json:"rate_per_s"`
	Work   Work      `json:"work_per_order"`
	Actual CPUWindow `json:"actual"`
	Floor  CPUWindow `json:"floor"`
	Rows   []CostRow `json:"rows"`
	// Totals over the saga's processes (services or floor clients,
	// PostgreSQL, RabbitMQ, Mailpit), without the load generator and the
	// rest of the machine.
	ActualMS float64  `json:"actual_ms_per_order"`
	FloorMS  float64  `json:"floor_ms_per_order"`
	Ratio    float64  `json:"floor_over_actual"`
	Notes    []string `json:"notes"`
}

// CPUWindow is one measured window: its CPU use and the orders (or floor
// orders) done in it.
type CPUWindow struct {
	Orders int    `json:"orders"`
	CPU    CPUUse `json:"cpu"`
}

// CostRow is one line of the table, in ms of CPU per order; -1 where the
// component has no part in that column.
type CostRow struct {
	Component string  `json:"component"`
	Actual    float64 `json:"actual_ms_per_order"`
	Floor     float64 `json:"floor_ms_per_order"`
}

// Work is what one order costs the dependencies, counted over the whole
// run (from just before the load to after the saga drained and the
// statistics settled), divided by the accepted orders.
type Work struct {
	Source       string  `json:"statement_source"`
	Statements   float64 `json:"statements,omitempty"` // 0 when unknown
	Transactions float64 `json:"transactions"`
	Inserted     float64 `json:"rows_inserted"`
	Updated      float64 `json:"rows_updated"`
	Deleted      float64 `json:"rows_deleted"`
	IndexScans   float64 `json:"index_scans"`
	SeqScans     float64 `json:"seq_scans"`
	// WALSyncs are the server's WAL flushes (pg_stat_wal.wal_sync, the
	// whole cluster's: nothing else runs during a measurement): the
	// commits that waited for the disk, less those that shared a flush.
	WALSyncs   float64 `json:"wal_syncs"`
	Publishes  float64 `json:"publishes"`
	Confirms   float64 `json:"confirms"`
	Deliveries float64 `json:"deliveries"`
	Acks       float64 `json:"acks"`
	Mails      float64 `json:"mails"`
}

// pgCounters are the cumulative statistics of some databases.
type pgCounters struct {
	Statements                             float64
	Xacts, Ins, Upd, Del, IdxScan, SeqScan float64
	WALSyncs                               float64 // the cluster's, not the databases'
	statementsOK                           bool
	statementsErr                          error
}

// readPG sums pg_stat_database and pg_stat_user_tables over the databases,
// and pg_stat_statements where it is loaded.
func readPG(ctx context.Context, pg string, dbs []string) (pgCounters, error) {
	var c pgCounters
	for _, db := range dbs {
		conn, err := pgx.Connect(ctx, pg+"/"+db+"?sslmode=disable")
		if err != nil {
			return c, err
		}
		var x, ins, upd, del, idx, seq float64
		err = conn.QueryRow(ctx, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()`).Scan(&x)
		if err == nil {
			err = conn.QueryRow(ctx, `SELECT coalesce(sum(n_tup_ins),0), coalesce(sum(n_tup_upd),0), coalesce(sum(n_tup_del),0),
				coalesce(sum(idx_scan),0), coalesce(sum(seq_scan),0) FROM pg_stat_user_tables`).Scan(&ins, &upd, &del, &idx, &seq)
		}
		if err != nil {
			conn.Close(ctx)
			return c, err
		}
		c.Xacts, c.Ins, c.Upd, c.Del, c.IdxScan, c.SeqScan = c.Xacts+x, c.Ins+ins, c.Upd+upd, c.Del+del, c.IdxScan+idx, c.SeqScan+seq
		if db == dbs[0] {
			if err := conn.QueryRow(ctx, `SELECT wal_sync FROM pg_stat_wal`).Scan(&c.WALSyncs); err != nil {
				conn.Close(ctx)
				return c, err
			}
		}
		var calls float64
		if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
			c.statementsErr = err
		} else if err := conn.QueryRow(ctx, `SELECT coalesce(sum(calls),0) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&calls); err != nil {
			c.statementsErr = err
		} else {
			c.Statements += calls
			c.statementsOK = true
		}
		conn.Close(ctx)
	}
	c.statementsOK = c.statementsOK && c.statementsErr == nil
	return c, nil
}

// vhostStats are a virtual host's cumulative message counts.
type vhostStats struct {
	Publish    float64 `json:"publish"`
	Confirm    float64 `json:"confirm"`
	DeliverGet float64 `json:"deliver_get"`
	Ack        float64 `json:"ack"`
}

func readVHost(ctx context.Context, api, vhost string) (vhostStats, error) {
	resp, err := rabbitAPI(ctx, api, http.MethodGet, "/api/vhosts/"+url.PathEscape(vhost), "")
	if err != nil {
		return vhostStats{}, err
	}
	defer resp.Body.Close()
	var v struct {
		MessageStats vhostStats `json:"message_stats"`
	}
	err = json.NewDecoder(resp.Body).Decode(&v)
	return v.MessageStats, err
}

// settledVHost reads the vhost's counts until they held still for longer
// than the broker's statistics interval (5 s), or a minute passed.
func settledVHost(ctx context.Context, api, vhost string) (vhostStats, error) {
	last, err := readVHost(ctx, api, vhost)
	since := time.Now()
	for deadline := time.Now().Add(time.Minute); err == nil && time.Now().Before(deadline); {
		if !sleep(ctx, time.Second) {
			return last, ctx.Err()
		}
		var v vhostStats
		if v, err = readVHost(ctx, api, vhost); err == nil && v != last {
			last, since = v, time.Now()
		}
		if time.Since(since) > 6*time.Second {
			break
		}
	}
	return last, err
}

// mailpitTotal is how many mails the Mailpit at api holds.
func mailpitTotal(ctx context.Context, api string) (float64, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/api/v1/messages?limit=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("mailpit API: %w", err)
	}
	defer resp.Body.Close()
	var m struct {
		Total    float64 `json:"total"`
		Messages []struct {
			ID string `json:"ID"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return 0, "", fmt.Errorf("mailpit API: %w", err)
	}
	id := ""
	if len(m.Messages) > 0 {
		id = m.Messages[0].ID
	}
	return m.Total, id, nil
}

// costTarget is what the cost run measures: a system of its own, or one
// that runs already.
type costTarget struct {
	sys        *System // nil when attached
	dbs        []string
	vhost      string
	mailpitAPI string
	smtpAddr   string
	comps      []Component // the services
	mailpit    Component
	state      string
}

func runCost(ctx context.Context, cfg Config, stdout, progress io.Writer) (err error) {
	c := cfg.Cost
	t := costTarget{}
	if c.Attach {
		t.dbs, t.vhost = []string{"order_db", "payment_db"}, cfg.VHost
		t.mailpitAPI, t.smtpAddr = c.MailpitAPI, c.SMTPAddr
		if err := vacuum(ctx, c.Infra.PG, t.dbs); err != nil {
			return err
		}
		ports := map[string]int{"order": 8001, "payment": 8002, "email": 8003}
		if u, err := url.Parse(cfg.Target); err == nil {
			ports["gateway"], _ = strconv.Atoi(u.Port())
		}
		for _, n := range []string{"gateway", "order", "payment", "email"} {
			t.comps = append(t.comps, fixed(n, listenerPID(ports[n])))
		}
		_, smtpPort, _ := strings.Cut(c.SMTPAddr, ":")
		p, _ := strconv.Atoi(smtpPort)
		t.mailpit = fixed("mailpit", listenerPID(p))
		t.state = fmt.Sprintf("the running system at %s (order_db and payment_db reused after VACUUM ANALYZE; vhost %q; its Mailpit)", cfg.Target, cfg.VHost)
	} else {
		fmt.Fprintf(progress, "cost: starting the four services from %s against scratch state\n", c.Bin)
		sys, err := StartSystem(ctx, c.Infra, c.Bin, c.Env, "order", "payment", "email", "gateway")
		if err != nil {
			return err
		}
		defer sys.Close()
		if err := waitHTTP(ctx, sys.URL("gateway")+"/health", 60*time.Second, nil); err != nil {
			return err
		}
		t.sys, t.dbs, t.vhost = sys, sys.Databases(), sys.VHost()
		t.mailpitAPI, t.smtpAddr = sys.URL("mailpit"), fmt.Sprintf("127.0.0.1:%d", sys.Ports["smtp"])
		for _, n := range []string{"gateway", "order", "payment", "email"} {
			t.comps = append(t.comps, fixed(n, sys.PID(n)))
		}
		t.mailpit = fixed("mailpit", sys.PID("mailpit"))
		cfg.Target, cfg.VHost = sys.URL("gateway"), sys.VHost()
		t.state = fmt.Sprintf("fresh scratch databases %s, a fresh vhost %s and a Mailpit of its own (removed at the end); services with their defaults%s",
			strings.Join(sys.Databases(), ", "), sys.Tag, envText(c.Env))
	}
	fmt.Fprintf(progress, "cost: state: %s\n", t.state)
	deps := []Component{named("postgres", "postgres"), named("rabbitmq", "beam.smp")}
	actualComps := append(append(t.comps, t.mailpit), append(deps, fixed("load generator", os.Getpid()))...)

	// The counts before: PostgreSQL's statistics lag by up to 10 s (what
	// idle backends have not flushed yet), so let the start-up settle.
	fmt.Fprintf(progress, "cost: waiting %s for the statistics to settle\n", c.Settle)
	if !sleep(ctx, c.Settle) {
		return ctx.Err()
	}
	pg0, err := readPG(ctx, c.Infra.PG, t.dbs)
	if err != nil {
		return fmt.Errorf("statistics: %w", err)
	}
	mq0, err := settledVHost(ctx, cfg.RabbitAPI, t.vhost)
	if err != nil {
		return err
	}
	mail0, _, err := mailpitTotal(ctx, t.mailpitAPI)
	if err != nil {
		return err
	}

	// The load, with a CPU window inside it: after the warm-up (the saga
	// must be in its steady state: PAYMENT_DELAY + EMAIL_DELAY at least)
	// until just before the load stops.
	var (
		win     CPUUse
		winFrom time.Time
		winTo   time.Time
		winErr  error
		wg      sync.WaitGroup
	)
	cfg.OnLoad = func(start time.Time) {
		wg.Go(func() {
			if !sleepUntil(ctx, start.Add(c.Warmup)) {
				return
			}
			a, err := sampleCPU(actualComps)
			if err != nil {
				winErr = err
				return
			}
			if !sleepUntil(ctx, start.Add(cfg.Duration-500*time.Millisecond)) {
				return
			}
			b, err := sampleCPU(actualComps)
			win, winFrom, winTo, winErr = cpuBetween(a, b), a.At, b.At, err
		})
	}
	rep, err := runScenario(ctx, cfg, progress)
	wg.Wait()
	if rep != nil {
		defer func() {
			writeText(stdout, rep)
			if rep.Cost != nil {
				writeCost(stdout, rep.Cost)
			}
			if werr := writeFiles(cfg.OutDir, rep, stdout); werr != nil && err == nil {
				err = werr
			}
		}()
	}
	if err != nil {
		return err
	}
	if err := errors.Join(winErr, ctx.Err()); err != nil || winTo.IsZero() {
		return fmt.Errorf("cost: no CPU window: %v", err)
	}
	cr := &CostReport{State: t.state, Rate: cfg.Rate}
	for _, s := range rep.samples {
		if s.OK() && !s.At.Before(winFrom) && s.At.Before(winTo) {
			cr.Actual.Orders++
		}
	}
	cr.Actual.CPU = win

	fmt.Fprintf(progress, "cost: waiting %s for the statistics to settle\n", c.Settle)
	if !sleep(ctx, c.Settle) {
		return ctx.Err()
	}
	pg1, err := readPG(ctx, c.Infra.PG, t.dbs)
	if err != nil {
		return err
	}
	mq1, err := settledVHost(ctx, cfg.RabbitAPI, t.vhost)
	if err != nil {
		return err
	}
	mail1, lastMail, err := mailpitTotal(ctx, t.mailpitAPI)
	if err != nil {
		return err
	}
	n := float64(max(1, rep.Accounting.Accepted))
	w := Work{
		Transactions: (pg1.Xacts - pg0.Xacts) / n,
		Inserted:     (pg1.Ins - pg0.Ins) / n, Updated: (pg1.Upd - pg0.Upd) / n, Deleted: (pg1.Del - pg0.Del) / n,
		IndexScans: (pg1.IdxScan - pg0.IdxScan) / n, SeqScans: (pg1.SeqScan - pg0.SeqScan) / n, WALSyncs: (pg1.WALSyncs - pg0.WALSyncs) / n,
		Publishes: (mq1.Publish - mq0.Publish) / n, Confirms: (mq1.Confirm - mq0.Confirm) / n,
		Deliveries: (mq1.DeliverGet - mq0.DeliverGet) / n, Acks: (mq1.Ack - mq0.Ack) / n,
		Mails: (mail1 - mail0) / n,
	}
	if pg1.statementsOK && pg0.statementsOK {
		w.Source = "pg_stat_statements (calls); transactions from pg_stat_database, rows and scans from pg_stat_user_tables"
		w.Statements = (pg1.Statements - pg0.Statements) / n
	} else {
		w.Source = fmt.Sprintf("pg_stat_database (transactions) and pg_stat_user_tables (rows, scans) deltas; statements unknown: pg_stat_statements is not usable here (%v)", firstLine(pg1.statementsErr))
	}
	cr.Work = w
	cr.Notes = append(cr.Notes,
		fmt.Sprintf("CPU: utime+stime from /proc/<pid>/stat over %.1f s inside the load (from %s after its start), %d orders sent and accepted in it; rest of the machine from /proc/stat",
			win.Seconds, c.Warmup, cr.Actual.Orders),
		fmt.Sprintf("work per order: counted from just before the load to %s after the saga drained, over %d accepted orders (idle polls of the relays included)", c.Settle, rep.Accounting.Accepted),
		"statements: "+w.Source)

	// The floor, with the services stopped (or idle when attached).
	if t.sys != nil {
		t.sys.Stop("gateway", "order", "payment", "email")
	}
	raw, err := mailRaw(ctx, t.mailpitAPI, lastMail)
	if err != nil {
		return err
	}
	fl, notes, err := runFloor(ctx, cfg, t, w, raw, win.Seconds, deps, progress)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	cr.Floor = fl
	cr.Notes = append(cr.Notes, notes...)
	cr.build()
	rep.Cost = cr
	if !rep.Accounting.OK {
		return errors.New("not every accepted order was accounted for; see the report")
	}
	return nil
}

// build makes the table from the two windows.
func (cr *CostReport) build() {
	per := func(w CPUWindow, name string) float64 {
		v, ok := w.CPU.MS[name]
		if !ok || w.Orders == 0 {
			return -1
		}
		return v / float64(w.Orders)
	}
	cr.Rows, cr.ActualMS, cr.FloorMS = nil, 0, 0
	for _, name := range []string{"gateway", "order", "payment", "email", "pgbench", "amqp client", "smtp client", "postgres", "rabbitmq", "mailpit"} {
		r := CostRow{Component: name, Actual: per(cr.Actual, name), Floor: per(cr.Floor, name)}
		cr.ActualMS += max(0, r.Actual)
		cr.FloorMS += max(0, r.Floor)
		cr.Rows = append(cr.Rows, r)
	}
	cr.Rows = append(cr.Rows, CostRow{Component: "saga total", Actual: cr.ActualMS, Floor: cr.FloorMS},
		CostRow{Component: "load generator", Actual: per(cr.Actual, "load generator"), Floor: -1},
		CostRow{Component: "rest of the machine", Actual: rest(cr.Actual), Floor: rest(cr.Floor)})
	if cr.ActualMS > 0 {
		cr.Ratio = cr.FloorMS / cr.ActualMS
	}
}

func rest(w CPUWindow) float64 {
	if w.Orders == 0 {
		return -1
	}
	return w.CPU.Rest / float64(w.Orders)
}

func writeCost(w io.Writer, cr *CostReport) {
	fmt.Fprintf(w, "\nCost per order at %d orders/s (ms of CPU per order)\n", cr.Rate)
	fmt.Fprintf(w, "  state: %s\n", cr.State)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  component\tactual\tfloor\t")
	cell := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", v)
	}
	for _, r := range cr.Rows {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t\n", r.Component, cell(r.Actual), cell(r.Floor))
	}
	tw.Flush()
	fmt.Fprintf(w, "  floor/actual (saga total): %.2f\n", cr.Ratio)
	k := cr.Work
	stmts := "unknown"
	if k.Statements > 0 {
		stmts = fmt.Sprintf("%.1f", k.Statements)
	}
	fmt.Fprintf(w, "  per order: %s statements in %.1f transactions, %.1f WAL flushes (rows: %.1f inserted, %.1f updated, %.1f deleted; %.1f index and %.2f sequential scans)\n",
		stmts, k.Transactions, k.WALSyncs, k.Inserted, k.Updated, k.Deleted, k.IndexScans, k.SeqScans)
	fmt.Fprintf(w, "             %.1f publishes (%.1f confirmed), %.1f deliveries, %.1f acks; %.2f mails\n", k.Publishes, k.Confirms, k.Deliveries, k.Acks, k.Mails)
	for _, n := range cr.Notes {
		fmt.Fprintf(w, "  - %s\n", n)
	}
}

func envText(env map[string]string) string {
	if len(env) == 0 {
		return ""
	}
	var parts []string
	for k, v := range env {
		parts = append(parts, k+"="+v)
	}
	return " but " + strings.Join(parts, " ")
}

func firstLine(err error) string {
	if err == nil {
		return "no error"
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// vacuum makes a reused database's state comparable from run to run.
func vacuum(ctx context.Context, pg string, dbs []string) error {
	for _, db := range dbs {
		conn, err := pgx.Connect(ctx, pg+"/"+db+"?sslmode=disable")
		if err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "VACUUM ANALYZE")
		conn.Close(ctx)
		if err != nil {
			return fmt.Errorf("VACUUM %s: %w", db, err)
		}
	}
	return nil
}

func mailRaw(ctx context.Context, api, id string) ([]byte, error) {
	if id == "" {
		return nil, errors.New("no mail in Mailpit to send again in the floor")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/api/v1/message/"+id+"/raw", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mailpit raw message: %s", resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func sleepUntil(ctx context.Context, t time.Time) bool { return sleep(ctx, time.Until(t)) }

// floorOrdersPerScript is how many orders' statements one pgbench script
// run holds, so that fractional counts per order round finely.
const floorOrdersPerScript = 4

// pgbenchScript is the floor of the database work: per order, the same
// transactions with the same row operations, as single-row statements on
// one table (inserts; updates, reads and deletes by key of the rows just
// inserted). Statements that did not touch a row (reads of nothing) are
// not known and not run.
func pgbenchScript(w Work, orders int) string {
	f := float64(orders)
	xacts := max(1, int(math.Round(w.Transactions*f)))
	ins := int(math.Round(w.Inserted * f))
	upd := int(math.Round(w.Updated * f))
	del := int(math.Round(w.Deleted * f))
	// An update or delete by key is an index scan itself; the rest are reads.
	sel := max(0, int(math.Round((w.IndexScans-w.Updated-w.Deleted)*f)))
	var stmts []string
	payload := strings.Repeat("x", 300) // about an event's size
	for range ins {
		stmts = append(stmts, `INSERT INTO floor_rows (k, payload) VALUES (:k, '`+payload+`') RETURNING id AS last \gset`)
	}
	target := ":last"
	for range upd {
		stmts = append(stmts, "UPDATE floor_rows SET k = k + 1, at = now() WHERE id = "+target+";")
	}
	for range sel {
		stmts = append(stmts, "SELECT k FROM floor_rows WHERE id = "+target+";")
	}
	for range del {
		stmts = append(stmts, "DELETE FROM floor_rows WHERE id = "+target+";")
	}
	var b strings.Builder
	b.WriteString("\\set k random(1, 1000000000)\n\\set last 1\n")
	// Spread the statements over the transactions, inserts first so that
	// the others find their rows; a transaction of one statement needs no
	// BEGIN and COMMIT, like the services' single statements.
	for i := range xacts {
		var part []string
		for j := i; j < len(stmts); j += xacts {
			part = append(part, stmts[j])
		}
		if len(part) > 1 {
			b.WriteString("BEGIN;\n" + strings.Join(part, "\n") + "\nCOMMIT;\n")
		} else if len(part) == 1 {
			b.WriteString(part[0] + "\n")
		} else {
			b.WriteString("SELECT 1;\n")
		}
	}
	return b.String()
}

const floorSchema = `CREATE TABLE floor_rows (id bigserial PRIMARY KEY, k bigint NOT NULL, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())`

// runFloor runs pgbench, the AMQP client and the SMTP client at the same
// rate at once, and measures their CPU and the dependencies' over a window
// as long as the actual one.
func runFloor(ctx context.Context, cfg Config, t costTarget, w Work, mail []byte, window float64, deps []Component, progress io.Writer) (CPUWindow, []string, error) {
	infra := cfg.Cost.Infra
	db := fmt.Sprintf("lt_floor_%d", os.Getpid())
	admin, err := pgx.Connect(ctx, infra.PG+"/postgres?sslmode=disable")
	if err != nil {
		return CPUWindow{}, nil, err
	}
	defer func() {
		_, _ = admin.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
		admin.Close(context.WithoutCancel(ctx))
	}()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		return CPUWindow{}, nil, err
	}
	conn, err := pgx.Connect(ctx, infra.PG+"/"+db+"?sslmode=disable")
	if err != nil {
		return CPUWindow{}, nil, err
	}
	_, err = conn.Exec(ctx, floorSchema)
	conn.Close(ctx)
	if err != nil {
		return CPUWindow{}, nil, err
	}
	dir, err := os.MkdirTemp("", "loadtest-floor-")
	if err != nil {
		return CPUWindow{}, nil, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "floor.sql")
	mailFile := filepath.Join(dir, "mail.eml")
	if err := errors.Join(os.WriteFile(script, []byte(pgbenchScript(w, floorOrdersPerScript)), 0o644), os.WriteFile(mailFile, mail, 0o644)); err != nil {
		return CPUWindow{}, nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return CPUWindow{}, nil, err
	}
	const warmup = 2 * time.Second
	length := warmup + time.Duration((window+1)*float64(time.Second))
	secs := strconv.Itoa(int(math.Ceil(length.Seconds())))
	rate := float64(cfg.Rate)
	amqpURL := strings.TrimRight(infra.AMQP, "/") + "/" + url.PathEscape(t.vhost)
	cmds := map[string]*exec.Cmd{
		"pgbench": exec.CommandContext(ctx, "pgbench", "-n", "-M", "prepared", "-c", "4", "-j", "1",
			"-R", fmt.Sprint(rate/floorOrdersPerScript), "-T", secs, "-f", script, infra.PG+"/"+db+"?sslmode=disable"),
		"amqp client": exec.CommandContext(ctx, self, "floor-amqp", "-url", amqpURL, "-rate", fmt.Sprint(rate), "-duration", length.String(),
			"-publishes", fmt.Sprint(w.Publishes), "-deliveries", fmt.Sprint(w.Deliveries)),
		"smtp client": exec.CommandContext(ctx, self, "floor-smtp", "-addr", t.smtpAddr, "-rate", fmt.Sprint(rate), "-duration", length.String(),
			"-mails", fmt.Sprint(w.Mails), "-message", mailFile),
	}
	var comps []Component
	outs := map[string]*strings.Builder{}
	fmt.Fprintf(progress, "cost: the floor at %d orders/s for %s: pgbench, an AMQP and an SMTP client\n", cfg.Rate, length.Round(time.Second))
	for name, cmd := range cmds {
		outs[name] = &strings.Builder{}
		cmd.Stdout, cmd.Stderr = outs[name], outs[name]
		if err := cmd.Start(); err != nil {
			return CPUWindow{}, nil, fmt.Errorf("start %s: %w", name, err)
		}
		comps = append(comps, fixed(name, cmd.Process.Pid))
	}
	comps = append(append(comps, deps...), t.mailpit)
	start := time.Now()
	var fw CPUWindow
	var a, b CPUSample
	if sleepUntil(ctx, start.Add(warmup)) {
		a, err = sampleCPU(comps)
		if err == nil && sleepUntil(ctx, a.At.Add(time.Duration(window*float64(time.Second)))) {
			b, err = sampleCPU(comps)
		}
	}
	var errs []error
	for name, cmd := range cmds {
		if werr := cmd.Wait(); werr != nil {
			errs = append(errs, fmt.Errorf("%s: %v\n%s", name, werr, outs[name]))
		}
	}
	if err := errors.Join(append(errs, err, ctx.Err())...); err != nil {
		return fw, nil, err
	}
	fw.CPU = cpuBetween(a, b)
	fw.Orders = int(math.Round(rate * fw.CPU.Seconds))
	notes := []string{
		fmt.Sprintf("floor: %s orders' worth per pgbench script run at %.1f runs/s (-M prepared, 4 clients): the same transactions and row operations as single-row statements on one table of a fresh database", strconv.Itoa(floorOrdersPerScript), rate/floorOrdersPerScript),
		fmt.Sprintf("floor: an amqp091 client doing %.2f confirmed persistent publishes and %.2f deliveries, each acked, per order, through quorum queues as the system's; an SMTP client sending the run's last mail (%d bytes) %.2f times per order over one kept session, into the same Mailpit",
			w.Publishes, w.Deliveries, len(mail), w.Mails),
		fmt.Sprintf("floor: window %.1f s, %d floor orders at the rate; PostgreSQL, RabbitMQ and Mailpit measured as above", fw.CPU.Seconds, fw.Orders),
		"floor pgbench: " + lastLines(outs["pgbench"].String(), "tps = ", "latency average"),
	}
	return fw, notes, nil
}

// lastLines picks the lines of out that start with one of the prefixes.
func lastLines(out string, prefixes ...string) string {
	var got []string
	for _, l := range strings.Split(out, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				got = append(got, strings.TrimSpace(l))
			}
		}
	}
	return strings.Join(got, "; ")
}
