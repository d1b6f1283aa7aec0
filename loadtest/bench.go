package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// BenchConfig is the closed-loop checkout benchmark: clients that each send
// the next checkout as soon as the previous one answered.
type BenchConfig struct {
	Target   string
	Warmup   time.Duration
	Single   time.Duration // the single-client phase
	Clients  int           // the concurrent phase
	Duration time.Duration
	Timeout  time.Duration
}

func parseBenchFlags(args []string, out io.Writer) (BenchConfig, error) {
	fs := flag.NewFlagSet("loadtest bench", flag.ContinueOnError)
	fs.SetOutput(out)
	var c BenchConfig
	fs.StringVar(&c.Target, "target", "http://127.0.0.1:9000", "gateway base URL")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "single-client warm-up, not measured")
	fs.DurationVar(&c.Single, "single", 10*time.Second, "length of the single-client phase")
	fs.IntVar(&c.Clients, "clients", 16, "concurrent clients of the throughput phase")
	fs.DurationVar(&c.Duration, "duration", 15*time.Second, "length of the throughput phase")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "timeout of one checkout")
	if err := fs.Parse(args); err != nil {
		return BenchConfig{}, err
	}
	if fs.NArg() > 0 {
		return BenchConfig{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.Single <= 0 || c.Duration <= 0 || c.Warmup < 0 || c.Clients <= 0 || c.Clients > 1024 || c.Timeout <= 0 ||
		c.Single > time.Hour || c.Duration > time.Hour || c.Warmup > time.Hour {
		return BenchConfig{}, errors.New("bench: need positive -single, -duration and -timeout (at most 1h), and 1 to 1024 -clients")
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
}

// closedLoop runs n clients back to back for d.
func closedLoop(ctx context.Context, cust *Customers, n int, d, timeout time.Duration) Phase {
	atk := vegeta.NewAttacker(
		vegeta.Timeout(timeout),
		vegeta.Workers(uint64(n)),
		vegeta.MaxWorkers(uint64(n)),
		vegeta.Connections(n),
		vegeta.KeepAlive(true),
		vegeta.MaxBody(64<<10),
	)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	p := Phase{Clients: n}
	var (
		lat         []time.Duration
		errs        = map[string]int{}
		first, last time.Time
	)
	// A zero rate is vegeta's "as fast as the workers go": with as many
	// workers as clients, each worker is a client in a closed loop.
	for r := range atk.Attack(cust.Targeter(), vegeta.Rate{Freq: 0}, d, "bench") {
		s := cust.sample(r)
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
	p.Latency = distOf(lat)
	p.Errors = counts(errs)
	if last.After(first) {
		p.Throughput = float64(p.Accepted) / last.Sub(first).Seconds()
	}
	return p
}

// runBench measures checkout through the gateway: single-client latency,
// then throughput with cfg.Clients concurrent clients. The last line is
// for scripts (scripts/bench.sh reads it).
func runBench(ctx context.Context, cfg BenchConfig, stdout, progress io.Writer) error {
	// Checkout needs only the gateway and the order service: the benchmark
	// also measures the checkout path with the saga's services stopped.
	if err := preflight(ctx, cfg.Target, "/readyz"); err != nil {
		return err
	}
	cust := NewCustomers(Config{Target: cfg.Target, Price: "1299.99"})
	if cfg.Warmup > 0 {
		fmt.Fprintf(progress, "bench: warming up with one client for %s\n", cfg.Warmup)
		closedLoop(ctx, cust, 1, cfg.Warmup, cfg.Timeout)
	}
	fmt.Fprintf(progress, "bench: one client for %s\n", cfg.Single)
	single := closedLoop(ctx, cust, 1, cfg.Single, cfg.Timeout)
	fmt.Fprintf(progress, "bench: %d clients for %s\n", cfg.Clients, cfg.Duration)
	multi := closedLoop(ctx, cust, cfg.Clients, cfg.Duration, cfg.Timeout)
	if err := ctx.Err(); err != nil {
		return err
	}

	for _, p := range []Phase{single, multi} {
		fmt.Fprintf(stdout, "checkout, %2d client(s): %6d requests, %6.1f/s accepted, p50 %s, p90 %s, p99 %s, max %s",
			p.Clients, p.Requests, p.Throughput, fmtMS(p.Latency.P50), fmtMS(p.Latency.P90), fmtMS(p.Latency.P99), fmtMS(p.Latency.Max))
		if len(p.Errors) > 0 {
			fmt.Fprintf(stdout, ", errors: %s", joinCounts(p.Errors, 3))
		}
		fmt.Fprintln(stdout)
	}
	fmt.Fprintf(stdout, "BENCH single_p50_ms=%.3f single_p99_ms=%.3f single_requests=%d clients=%d throughput=%.1f multi_p50_ms=%.3f multi_p99_ms=%.3f errors=%d\n",
		single.Latency.P50, single.Latency.P99, single.Requests, multi.Clients, multi.Throughput,
		multi.Latency.P50, multi.Latency.P99, single.Requests-single.Accepted+multi.Requests-multi.Accepted)
	if single.Accepted == 0 || multi.Accepted == 0 {
		return errors.New("bench: no checkout was accepted")
	}
	return nil
}
