// Command loadtest drives checkouts through the gateway at a constant rate
// (an open model: requests go out on schedule whether or not earlier ones
// have answered) and measures what a customer feels: the checkout answer,
// and the time until the order is paid and its mail is accepted by the SMTP
// server. It writes the report to the terminal and as JSON.
//
//	go run ./loadtest                          # the default scenario (make loadtest)
//	go run ./loadtest -rate 50 -duration 1m    # another one
//	go run ./loadtest -knee                    # step the rate up to find the knee
//	go run ./loadtest -knee -scratch           # the same against bin/ started on fresh state
//	go run ./loadtest -cost -rate 80           # CPU per order by component beside the floor (make cost)
//	go run ./loadtest bench                    # closed-loop checkout beside pgbench (make bench)
//
// See loadtest/README.md for every flag and the figures measured so far.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/checkout-demo/checkout/internal/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "bench" {
		// The load generator runs as the services do (one P, GOGC 400,
		// unless GOMAXPROCS or GOGC are set): like pgbench's one thread,
		// its 16 clients then take less of the two cores the path
		// measured shares (0.047–0.061 ms of CPU per checkout against
		// 0.056–0.069 with the runtime's defaults, alternated three
		// times on 2026-12-03). Here in main, so that the tests' own
		// runs keep their Ps.
		web.LeanRuntime()
	}
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// run parses args and runs the scenario, the knee search or the benchmark.
// The report goes to stdout, the live progress line to progress.
func run(ctx context.Context, args []string, stdout, progress io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "bench":
			cfg, err := parseBenchFlags(args[1:], progress)
			if err != nil {
				return err
			}
			return runBench(ctx, cfg, stdout, progress)
		case "floor-amqp":
			return floorAMQP(ctx, args[1:], stdout)
		case "floor-smtp":
			return floorSMTP(ctx, args[1:], stdout)
		}
	}
	cfg, err := parseFlags(args, progress)
	if err != nil {
		return err
	}
	if cfg.Cost.On {
		return runCost(ctx, cfg, stdout, progress)
	}
	if cfg.Scratch {
		fmt.Fprintf(progress, "scratch: starting the four services from %s against scratch state\n", cfg.Cost.Bin)
		sys, err := StartSystem(ctx, cfg.Cost.Infra, cfg.Cost.Bin, cfg.Cost.Env, "order", "payment", "email", "gateway")
		if err != nil {
			return err
		}
		defer sys.Close()
		// Ready one by one is not yet healthy together (the gateway's view).
		if err := waitHTTP(ctx, sys.URL("gateway")+"/health", 60*time.Second, nil); err != nil {
			return err
		}
		cfg.Target, cfg.VHost = sys.URL("gateway"), sys.VHost()
		fmt.Fprintf(progress, "scratch: fresh databases %s, vhost %s and a Mailpit of its own (removed at the end)%s\n",
			strings.Join(sys.Databases(), ", "), sys.Tag, envText(cfg.Cost.Env))
	}
	rep, err := runScenario(ctx, cfg, progress)
	if rep != nil {
		writeText(stdout, rep)
		if werr := writeFiles(cfg.OutDir, rep, stdout); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return err
	}
	if !rep.Accounting.OK {
		return errors.New("not every accepted order was accounted for; see the report")
	}
	return nil
}
