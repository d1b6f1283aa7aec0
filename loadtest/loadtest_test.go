package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// The floor's clients are this program started again; under go test that
// is the test binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && strings.HasPrefix(os.Args[1], "floor-") {
		if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the four services once per test binary.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "loadtest-bin-"); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./gateway", "./order", "./payment", "./email")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// infra is where the tests' PostgreSQL and RabbitMQ are; it skips (or
// fails under CI) when they are not running.
func infra(t *testing.T) Infra {
	t.Helper()
	testenv.Database(t)
	testenv.VHost(t)
	pg := strings.TrimSuffix(strings.Split(testenv.PostgresURL, "?")[0], "/postgres")
	return Infra{PG: pg, AMQP: strings.TrimRight(testenv.AMQPURL, "/"), RabbitAPI: testenv.RabbitAPI}
}

// startSystem is the four services against scratch state, with short delays.
func startSystem(t *testing.T) *System {
	t.Helper()
	in := infra(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := StartSystem(ctx, in, binaries(t), map[string]string{"PAYMENT_DELAY": "100ms", "EMAIL_DELAY": "100ms"},
		"order", "payment", "email", "gateway")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := waitHTTP(ctx, s.URL("gateway")+"/health", 60*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// A short run against a system of its own: every accepted order must be
// accounted for, in the report and in the inbox. It asserts consistency, not
// speed; the figures are the load test's business.
func TestShortRunAccountsForEveryOrder(t *testing.T) {
	t.Parallel()
	s := startSystem(t)
	const rate, seconds, declined = 20, 3, 0.25
	rep, stdout := runReport(t, 90*time.Second,
		"-target", s.URL("gateway"),
		"-rate", "20", "-duration", "3s", "-declined", "0.25",
		"-rabbit-api", testenv.RabbitAPI, "-vhost", s.VHost(),
		"-sample", "500ms", "-drain-timeout", "60s", "-simulated-work", "200ms",
	)

	a := rep.Accounting
	if !a.OK || a.Unfinished != 0 || a.Mismatched != 0 || a.Unreadable != 0 || a.Duplicates != 0 {
		t.Fatalf("accounting not ok: %+v\n%s", a, stdout)
	}
	if a.Accepted == 0 || a.Accepted != rep.Checkout.Accepted || a.Paid+a.Declined != a.Accepted {
		t.Fatalf("accepted %d (checkout says %d) != paid %d + declined %d", a.Accepted, rep.Checkout.Accepted, a.Paid, a.Declined)
	}
	// The declined mix: of the orders sent, floor(n·share) were priced to be
	// declined; of the accepted ones, those and only those were declined.
	if sent := rep.Checkout.Requests; sent < rate*seconds/2 || a.Declined != a.PlannedDeclined || a.PlannedDeclined > int(float64(sent)*declined) {
		t.Fatalf("sent %d, declined %d, planned %d", sent, a.Declined, a.PlannedDeclined)
	}
	if a.Accepted == rep.Checkout.Requests && a.PlannedDeclined != int(float64(a.Accepted)*declined) {
		t.Fatalf("all %d accepted, but %d priced to be declined, want %d", a.Accepted, a.PlannedDeclined, int(float64(a.Accepted)*declined))
	}
	if rep.Saga.Orders != a.Accepted || rep.Saga.ToMail.N != a.Accepted || rep.Saga.ToMail.P50 < rep.Saga.ToResult.P50 {
		t.Fatalf("saga figures do not cover every order: %+v", rep.Saga)
	}
	if len(rep.Queues) < len(events.Topology) {
		t.Fatalf("queues %+v, want at least %v", rep.Queues, DefaultQueues())
	}

	// The inbox agrees: one mail per accepted order.
	mails, _, err := mailpitTotal(t.Context(), s.URL("mailpit"))
	if err != nil {
		t.Fatal(err)
	}
	if int(mails) != a.Accepted {
		t.Fatalf("%v mails for %d orders", mails, a.Accepted)
	}
	for _, want := range []string{"every accepted order accounted for", "time to mail", "latency"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("text report lacks %q:\n%s", want, stdout)
		}
	}
}

// The knee search runs end to end on a tiny scale; again, only its
// consistency is checked.
// The knee against a system of its own (-scratch: started from the
// binaries on fresh state, as `make knee` does).
func TestKnee(t *testing.T) {
	testenv.Long(t)
	t.Parallel()
	in := infra(t)
	rep, _ := runReport(t, 150*time.Second,
		"-knee", "-knee-start", "5", "-knee-max", "10", "-knee-factor", "2", "-knee-step", "1s",
		"-knee-p99", "10s", "-knee-drain", "20s",
		"-scratch", "-bin", binaries(t), "-pg", in.PG, "-amqp", in.AMQP, "-env", "PAYMENT_DELAY=100ms,EMAIL_DELAY=100ms",
		"-declined", "0.5", "-rabbit-api", in.RabbitAPI,
		"-sample", "500ms", "-drain-timeout", "60s",
	)
	if rep.Knee == nil || len(rep.Knee.Steps) == 0 {
		t.Fatalf("no knee steps: %+v", rep.Knee)
	}
	total := 0
	for _, st := range rep.Knee.Steps {
		total += st.Requests
		if st.OK && st.Rate > rep.Knee.Sustainable {
			t.Errorf("step %d/s held but the sustainable rate is %d/s", st.Rate, rep.Knee.Sustainable)
		}
	}
	if total != rep.Checkout.Requests || !rep.Accounting.OK || rep.Accounting.Accepted != rep.Checkout.Accepted {
		t.Fatalf("steps sent %d, report %d; accounting %+v", total, rep.Checkout.Requests, rep.Accounting)
	}
}

// make bench on a tiny scale: its own system, the two phases, pgbench.
func TestBench(t *testing.T) {
	t.Parallel()
	in := infra(t)
	stdout := runLoadtest(t, 120*time.Second, "bench", "-bin", binaries(t), "-pg", in.PG, "-amqp", in.AMQP, "-rabbit-api", in.RabbitAPI,
		"-warmup", "0", "-single", "500ms", "-clients", "4", "-duration", "1s")
	var p50, p99, straight, tput, multiP99, tps, ratio float64
	var clients, errs int
	line := stdout[strings.Index(stdout, "BENCH "):]
	if _, err := fmt.Sscanf(line, "BENCH single_p50_ms=%f single_p99_ms=%f straight_p50_ms=%f clients=%d throughput=%f multi_p99_ms=%f pgbench_tps=%f ratio=%f errors=%d",
		&p50, &p99, &straight, &clients, &tput, &multiP99, &tps, &ratio, &errs); err != nil {
		t.Fatalf("BENCH line %q: %v", line, err)
	}
	if clients != 4 || p50 <= 0 || p99 < p50 || straight <= 0 || tput <= 0 || tps <= 0 || errs != 0 || math.Abs(ratio-tput/tps) > 0.01 {
		t.Fatalf("bench figures do not add up: %s", line)
	}
}

// make cost on a tiny scale: every component measured in both windows,
// and the work per order counted. One mail per order is exact; the rest
// depends on the services and is only checked to be there.
func TestCost(t *testing.T) {
	testenv.Long(t)
	t.Parallel()
	in := infra(t)
	rep, _ := runReport(t, 180*time.Second, "-cost", "-bin", binaries(t), "-pg", in.PG, "-amqp", in.AMQP, "-rabbit-api", in.RabbitAPI,
		"-env", "PAYMENT_DELAY=100ms,EMAIL_DELAY=100ms", "-rate", "10", "-duration", "4s", "-cost-warmup", "1s", "-cost-settle", "1s",
		"-declined", "0", "-drain-timeout", "60s")
	c := rep.Cost
	if c == nil || !rep.Accounting.OK || c.Actual.Orders == 0 || c.Floor.Orders == 0 || c.ActualMS <= 0 || c.FloorMS <= 0 {
		t.Fatalf("cost report: %+v", c)
	}
	if !strings.Contains(c.State, "fresh scratch databases") {
		t.Errorf("state %q does not say what the run started from", c.State)
	}
	var names []string
	for _, r := range c.Rows {
		names = append(names, r.Component)
	}
	for _, want := range []string{"gateway", "order", "payment", "email", "pgbench", "amqp client", "smtp client", "postgres", "rabbitmq", "mailpit", "load generator", "rest of the machine"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %q row in %v", want, names)
		}
	}
	w := c.Work
	if w.Mails != 1 || w.Transactions <= 0 || w.WALSyncs <= 0 || w.Inserted <= 0 || w.Publishes <= 0 || w.Acks <= 0 || w.Deliveries <= 0 {
		t.Errorf("work per order: %+v", w)
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"ErrRate", []string{"-rate", "0"}},
		{"ErrDeclined", []string{"-declined", "1.5"}},
		{"ErrTarget", []string{"-target", "localhost:9000"}},
		{"ErrArgument", []string{"extra"}},
		{"ErrKnee", []string{"-knee", "-knee-factor", "1"}},
		{"ErrBenchClients", []string{"bench", "-clients", "0"}},
		{"ErrCostWarmup", []string{"-cost", "-duration", "5s", "-cost-warmup", "5s"}},
		{"ErrCostKnee", []string{"-cost", "-knee"}},
		{"ErrScratchCost", []string{"-cost", "-scratch"}},
		{"ErrCostEnv", []string{"-cost", "-env", "PAYMENT_DELAY"}},
		{"ErrBenchEnv", []string{"bench", "-env", "OTEL_TRACES_SAMPLER"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := run(context.Background(), tt.args, io.Discard, io.Discard); err == nil {
				t.Fatal("run accepted bad flags")
			}
		})
	}
}

func TestNoGateway(t *testing.T) {
	port := testenv.ClosedPort(t) // bound, never listening: nothing answers
	err := run(context.Background(), []string{"-target", "http://127.0.0.1:" + strconv.Itoa(port), "-out", ""}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "make run") {
		t.Fatalf("err = %v, want a hint to start the system", err)
	}
}

func TestDeclinesAreSpreadEvenly(t *testing.T) {
	tests := []struct {
		name  string
		share float64
		n     int
		want  int
	}{
		{"None", 0, 1000, 0},
		{"Tenth", 0.1, 1000, 100},
		{"Quarter", 0.25, 60, 15},
		{"Third", 1.0 / 3, 10, 3},
		{"All", 1, 7, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Customers{declined: tt.share}
			got := 0
			for i := range tt.n {
				if c.Declines(int64(i)) {
					got++
				}
			}
			if got != tt.want {
				t.Fatalf("%d of %d declined, want %d", got, tt.n, tt.want)
			}
		})
	}
}

func TestAccount(t *testing.T) {
	at := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	view := func(id int64, status string, steps ...string) OrderView {
		o := OrderView{ID: id, Status: status}
		for i, s := range steps {
			o.Timeline = append(o.Timeline, struct {
				Step string    `json:"step"`
				At   time.Time `json:"at"`
			}{s, at.Add(time.Duration(i) * time.Second)})
		}
		return o
	}
	paid := view(1, "paid", "created", "paid", "confirmation_sent")
	declined := view(2, "payment_failed", "created", "payment_failed", "payment_failed_notice_sent")
	ok := func(id int64, decline bool) Sample {
		return Sample{At: at, Code: http.StatusCreated, OrderID: id, Decline: decline}
	}
	tests := []struct {
		name   string
		sample []Sample
		views  map[int64]OrderView
		wantOK bool
	}{
		{"OK", []Sample{ok(1, false), ok(2, true), {Code: 503, Err: "503"}}, map[int64]OrderView{1: paid, 2: declined}, true},
		{"ErrUnfinished", []Sample{ok(1, false)}, map[int64]OrderView{1: view(1, "paid", "created", "paid")}, false},
		{"ErrMissing", []Sample{ok(1, false)}, map[int64]OrderView{}, false},
		{"ErrPaidButPricedToDecline", []Sample{ok(1, true)}, map[int64]OrderView{1: paid}, false},
		{"ErrDeclinedButPricedToPay", []Sample{ok(2, false)}, map[int64]OrderView{2: declined}, false},
		{"ErrDuplicate", []Sample{ok(1, false), ok(1, false)}, map[int64]OrderView{1: paid}, false},
		{"ErrUnreadable201", []Sample{{Code: http.StatusCreated, Err: "201 without a readable order"}}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, times := account(tt.sample, tt.views)
			if a.OK != tt.wantOK {
				t.Fatalf("OK = %v, want %v: %+v", a.OK, tt.wantOK, a)
			}
			if tt.wantOK {
				if len(times) != 2 || times[0].ToResult != time.Second || times[0].ToMail != 2*time.Second {
					t.Fatalf("times %+v", times)
				}
			}
		})
	}
}

// runLoadtest runs the program with args within timeout and fails the
// test when it fails; it logs and returns what the program printed.
func runLoadtest(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout bytes.Buffer
	if err := run(ctx, args, &stdout, io.Discard); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, stdout.String())
	}
	t.Log(stdout.String())
	return stdout.String()
}

// runReport is runLoadtest with -out a folder of its own; it returns the
// report written there with what the program printed.
func runReport(t *testing.T, timeout time.Duration, args ...string) (Report, string) {
	t.Helper()
	out := t.TempDir()
	stdout := runLoadtest(t, timeout, append(args, "-out", out)...)
	return readReport(t, out), stdout
}

func readReport(t *testing.T, dir string) Report {
	t.Helper()
	var rep Report
	if err := json.Unmarshal([]byte(readFile(t, dir, ".json")), &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func readFile(t *testing.T, dir, ext string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
	if len(files) != 1 {
		t.Fatalf("%d %s reports in %s, want 1", len(files), ext, dir)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// -env given more than once adds up, a later KEY winning: `make knee`'s
// LOG_LEVEL=warn stays when KNEE_ARGS brings settings of its own.
func TestEnvFlagsAddUp(t *testing.T) {
	cfg, err := parseFlags([]string{"-scratch", "-env", "LOG_LEVEL=warn,A=1", "-env", "A=2,B=3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"LOG_LEVEL": "warn", "A": "2", "B": "3"}; !maps.Equal(cfg.Cost.Env, want) {
		t.Fatalf("env %v, want %v", cfg.Cost.Env, want)
	}
}
