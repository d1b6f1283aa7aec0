package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/testenv"
)

// A short run against a system of its own: every accepted order must be
// accounted for, in the report and in the inbox. It asserts consistency, not
// speed; the figures are the load test's business.
func TestShortRunAccountsForEveryOrder(t *testing.T) {
	t.Parallel()
	s := testenv.StartSystem(t, map[string]string{"PAYMENT_DELAY": "100ms", "EMAIL_DELAY": "100ms"})
	u, err := url.Parse(s.AMQPURL)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var stdout bytes.Buffer
	const rate, seconds, declined = 20, 3, 0.25
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err = run(ctx, []string{
		"-target", s.URL("gateway"),
		"-rate", "20", "-duration", "3s", "-declined", "0.25",
		"-rabbit-api", testenv.RabbitAPI, "-vhost", strings.TrimPrefix(u.Path, "/"),
		"-sample", "500ms", "-drain-timeout", "60s", "-simulated-work", "200ms",
		"-out", out,
	}, &stdout, io.Discard)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stdout.String())
	}
	t.Log(stdout.String())

	rep := readReport(t, out)
	a := rep.Accounting
	if !a.OK || a.Unfinished != 0 || a.Mismatched != 0 || a.Unreadable != 0 || a.Duplicates != 0 {
		t.Fatalf("accounting not ok: %+v\n%s", a, stdout.String())
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
	if len(rep.Queues) < len(DefaultQueues) {
		t.Fatalf("queues %+v, want at least %v", rep.Queues, DefaultQueues)
	}

	// The inbox agrees: one mail per accepted order, a failure notice for
	// each declined one.
	mails := s.Mailpit.Messages(t)
	failed := 0
	for _, m := range mails {
		if strings.Contains(m.Subject, "Payment failed") {
			failed++
		}
	}
	if len(mails) != a.Accepted || failed != a.Declined {
		t.Fatalf("%d mails (%d failure notices) for %d orders (%d declined)", len(mails), failed, a.Accepted, a.Declined)
	}

	html := readFile(t, out, ".html")
	for _, want := range []string{"<svg", "Every accepted order accounted for", "Checkout latency over time", "payment.order-created"} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML report lacks %q", want)
		}
	}
	for _, want := range []string{"every accepted order accounted for", "time to mail", "latency"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, stdout.String())
		}
	}
}

// The knee search and the benchmark run end to end on a tiny scale; again,
// only their consistency is checked.
func TestKneeAndBench(t *testing.T) {
	t.Parallel()
	s := testenv.StartSystem(t, map[string]string{"PAYMENT_DELAY": "50ms", "EMAIL_DELAY": "50ms"})
	u, err := url.Parse(s.AMQPURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out := t.TempDir()
	var stdout bytes.Buffer
	err = run(ctx, []string{
		"-knee", "-knee-start", "5", "-knee-max", "10", "-knee-factor", "2", "-knee-step", "1s",
		"-knee-p99", "10s", "-knee-drain", "20s",
		"-target", s.URL("gateway"), "-declined", "0.5",
		"-rabbit-api", testenv.RabbitAPI, "-vhost", strings.TrimPrefix(u.Path, "/"),
		"-sample", "500ms", "-drain-timeout", "60s", "-out", out,
	}, &stdout, io.Discard)
	if err != nil {
		t.Fatalf("knee: %v\n%s", err, stdout.String())
	}
	t.Log(stdout.String())
	rep := readReport(t, out)
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

	stdout.Reset()
	if err := run(ctx, []string{"bench", "-target", s.URL("gateway"), "-warmup", "0", "-single", "500ms", "-clients", "4", "-duration", "500ms"}, &stdout, io.Discard); err != nil {
		t.Fatalf("bench: %v\n%s", err, stdout.String())
	}
	t.Log(stdout.String())
	if !strings.Contains(stdout.String(), "BENCH single_p50_ms=") || !strings.Contains(stdout.String(), " clients=4 ") {
		t.Fatalf("bench output:\n%s", stdout.String())
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
	port := testenv.FreePort(t)
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

func TestChartRendersWithoutData(t *testing.T) {
	for _, c := range []Chart{
		{Title: "empty"},
		{Title: "one point", LogY: true, Series: []Series{{Name: "a", Points: []Point{{1, 0.5}}}}},
		{Title: "flat", Series: []Series{{Name: "a", Points: []Point{{0, 0}, {1, 0}}}}},
	} {
		if svg := c.SVG(); !strings.HasPrefix(svg, "<svg") || !strings.HasSuffix(svg, "</svg>") || strings.Contains(svg, "NaN") {
			t.Errorf("%s: %s", c.Title, svg)
		}
	}
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
