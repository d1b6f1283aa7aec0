package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
)

// Config is one load test, from the command line.
type Config struct {
	Target   string        // the gateway's base URL
	Rate     int           // orders per second (open model)
	Duration time.Duration // how long orders are sent
	Declined float64       // share of orders whose payment is declined (0 to 1)

	Price        string // price of an order that is paid
	DeclinePrice string // price of an order that is declined (over PAYMENT_MAX_AMOUNT)

	Timeout    time.Duration // per checkout request
	MaxWorkers int           // the most checkouts in flight at once

	RabbitAPI string        // RabbitMQ management API, with credentials
	VHost     string        // the system's virtual host
	Queues    []string      // the saga's queues (their retry and dead-letter queues are watched too)
	Sample    time.Duration // queue depth sampling interval

	DrainTimeout time.Duration // the longest wait for every order to finish after the load stopped
	ReadWorkers  int           // concurrent order reads while accounting

	OutDir string // where the HTML and JSON reports go; empty writes none

	// SimulatedWork is PAYMENT_DELAY + EMAIL_DELAY, the floor of time-to-mail,
	// used only to state the time-to-mail goal.
	SimulatedWork time.Duration
	// PgbenchTPS, when set, states the throughput goal (half of pgbench).
	PgbenchTPS float64

	Knee Knee
	Cost CostConfig
	// Scratch starts the services from Cost.Bin (with Cost.Env) against
	// fresh state and aims the scenario at them: figures that compare from
	// run to run, and two builds measured back to back.
	Scratch bool

	// OnLoad, when set, is called as the load starts (cost mode's CPU window).
	OnLoad func(start time.Time)
}

// CostConfig is the cost mode (-cost): the saga at a fixed rate with the CPU
// of every process measured, beside the floor.
type CostConfig struct {
	On         bool
	Attach     bool              // measure a running `make run` instead of starting the services
	Bin        string            // the binaries
	Infra      Infra             // PostgreSQL and RabbitMQ
	Env        map[string]string // extra settings of the started services
	Warmup     time.Duration     // the CPU window starts this long after the load
	Settle     time.Duration     // the wait for the statistics before and after
	MailpitAPI string            // attached: Mailpit's API
	SMTPAddr   string            // attached: Mailpit's SMTP
}

// Knee is the knee search: steps of rising rate until a threshold breaks.
type Knee struct {
	On          bool
	Start       int
	Factor      float64
	Max         int
	Refine      int           // bisection steps between the last good and the first bad rate
	Step        time.Duration // duration of each step
	P99         time.Duration // checkout p99 threshold
	Errors      float64       // error share threshold
	Saga        bool          // a step whose saga falls behind is not sustainable
	Confirm     bool          // a breaking step is tried again before it counts
	DrainBudget time.Duration // the longest wait for the backlog between steps
}

// DefaultQueues are the saga's work queues.
func DefaultQueues() []string {
	out := make([]string, len(events.Topology))
	for i, q := range events.Topology {
		out[i] = q.Name
	}
	return out
}

func parseFlags(args []string, out io.Writer) (Config, error) {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(out)
	var c Config
	var queues, env string
	fs.StringVar(&c.Target, "target", "http://127.0.0.1:9000", "gateway base URL")
	fs.IntVar(&c.Rate, "rate", 100, "checkouts per second (constant, open model)")
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "how long checkouts are sent")
	fs.Float64Var(&c.Declined, "declined", 0.1, "share of orders priced over PAYMENT_MAX_AMOUNT, so that their payment is declined (0 to 1)")
	fs.StringVar(&c.Price, "price", "1299.99", "price of an order meant to be paid")
	fs.StringVar(&c.DeclinePrice, "decline-price", "10000.01", "price of an order meant to be declined (above PAYMENT_MAX_AMOUNT)")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "timeout of one checkout request")
	fs.IntVar(&c.MaxWorkers, "max-workers", 2000, "the most checkouts in flight at once")
	fs.StringVar(&c.RabbitAPI, "rabbit-api", "http://guest:guest@127.0.0.1:15672", "RabbitMQ management API (empty: no queue depths)")
	fs.StringVar(&c.VHost, "vhost", "/", "RabbitMQ virtual host of the system")
	fs.StringVar(&queues, "queues", strings.Join(DefaultQueues(), ","), "the saga's queues to watch (comma-separated); their .retry.N and .dlq queues are watched too")
	fs.DurationVar(&c.Sample, "sample", time.Second, "queue depth sampling interval")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 3*time.Minute, "the longest wait for every order to finish after the load stopped")
	fs.IntVar(&c.ReadWorkers, "read-workers", 4, "concurrent order reads while accounting (after the system drained)")
	fs.StringVar(&c.OutDir, "out", "loadtest/reports", "folder for the HTML and JSON reports (empty: none)")
	fs.DurationVar(&c.SimulatedWork, "simulated-work", 3*time.Second, "PAYMENT_DELAY + EMAIL_DELAY of the system, for the time-to-mail goal")
	fs.Float64Var(&c.PgbenchTPS, "pgbench-tps", 0, "pgbench's tps from make bench, for the throughput goal (0: not stated)")

	fs.BoolVar(&c.Knee.On, "knee", false, "find the knee: step the rate up until a threshold breaks")
	fs.IntVar(&c.Knee.Start, "knee-start", 25, "knee: first rate")
	fs.Float64Var(&c.Knee.Factor, "knee-factor", 1.5, "knee: each step's rate is the previous one times this")
	fs.IntVar(&c.Knee.Max, "knee-max", 3000, "knee: the highest rate tried")
	fs.IntVar(&c.Knee.Refine, "knee-refine", 2, "knee: bisection steps between the last good and the first bad rate")
	fs.DurationVar(&c.Knee.Step, "knee-step", 15*time.Second, "knee: duration of each step")
	fs.DurationVar(&c.Knee.P99, "knee-p99", 100*time.Millisecond, "knee: a step breaks when checkout p99 exceeds this")
	fs.Float64Var(&c.Knee.Errors, "knee-errors", 0.01, "knee: a step breaks when this share of checkouts fails")
	fs.BoolVar(&c.Knee.Saga, "knee-saga", true, "knee: a step also breaks when the saga falls behind (ready messages pile up)")
	fs.BoolVar(&c.Knee.Confirm, "knee-confirm", true, "knee: try a breaking step again; it breaks only if it breaks twice")
	fs.DurationVar(&c.Knee.DrainBudget, "knee-drain", 2*time.Minute, "knee: the longest wait for the backlog between steps")
	fs.BoolVar(&c.Cost.On, "cost", false, "cost mode: start the services against scratch state, measure CPU per order by component and the floor beside it")
	fs.BoolVar(&c.Scratch, "scratch", false, "start the four services from -bin against scratch state (fresh databases, vhost and Mailpit, removed at the end) and run the scenario or -knee against them, instead of -target")
	fs.BoolVar(&c.Cost.Attach, "attach", false, "cost: measure the running `make run` (-target, order_db, payment_db, Mailpit on :1026/:8026) instead of starting the services")
	fs.StringVar(&c.Cost.Bin, "bin", "bin", "cost, scratch, bench: folder of the four binaries")
	fs.StringVar(&c.Cost.Infra.PG, "pg", "postgres://postgres@localhost:5432", "cost, bench: PostgreSQL server (no database)")
	fs.StringVar(&c.Cost.Infra.AMQP, "amqp", "amqp://guest:guest@localhost:5672", "cost, bench: RabbitMQ (no vhost)")
	fs.Func("env", "cost, scratch: extra settings of the started services, KEY=VALUE,… (e.g. PAYMENT_DELAY=100ms); given more than once, they add up (a later KEY wins)", func(v string) error {
		if env != "" && v != "" {
			env += ","
		}
		env += v
		return nil
	})
	fs.DurationVar(&c.Cost.Warmup, "cost-warmup", 5*time.Second, "cost: the CPU window starts this long after the load (past PAYMENT_DELAY + EMAIL_DELAY)")
	fs.DurationVar(&c.Cost.Settle, "cost-settle", 11*time.Second, "cost: wait before and after the load for PostgreSQL's statistics (flushed within 10 s)")
	fs.StringVar(&c.Cost.MailpitAPI, "mailpit-api", "http://127.0.0.1:8026", "cost -attach: Mailpit's API")
	fs.StringVar(&c.Cost.SMTPAddr, "smtp", "127.0.0.1:1026", "cost -attach: Mailpit's SMTP")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (flags only; see -h)", fs.Arg(0))
	}
	c.Cost.Infra.RabbitAPI = c.RabbitAPI
	var err error
	if c.Cost.Env, err = parseEnv(env); err != nil {
		return Config{}, err
	}
	for _, q := range strings.Split(queues, ",") {
		if q = strings.TrimSpace(q); q != "" {
			c.Queues = append(c.Queues, q)
		}
	}
	return c, c.validate()
}

// parseEnv reads an -env flag: KEY=VALUE settings separated by commas.
func parseEnv(env string) (map[string]string, error) {
	if env == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(env, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("-env: %q is not KEY=VALUE", kv)
		}
		out[k] = v
	}
	return out, nil
}

func (c Config) validate() error {
	var errs []error
	if u, err := url.Parse(c.Target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("-target %q is not an http(s) URL", c.Target))
	}
	if c.Rate <= 0 || c.Rate > 100_000 {
		errs = append(errs, errors.New("-rate must be from 1 to 100000"))
	}
	// Every loop is bounded: by rate × duration requests and by the timeouts.
	if c.Duration <= 0 || c.Duration > 24*time.Hour {
		errs = append(errs, errors.New("-duration must be positive and at most 24h"))
	}
	if c.Declined < 0 || c.Declined > 1 {
		errs = append(errs, errors.New("-declined must be from 0 to 1"))
	}
	if c.Timeout <= 0 || c.MaxWorkers <= 0 || c.ReadWorkers <= 0 || c.Sample <= 0 || c.DrainTimeout <= 0 {
		errs = append(errs, errors.New("-timeout, -max-workers, -read-workers, -sample and -drain-timeout must be positive"))
	}
	if c.Cost.On && (c.Knee.On || c.Cost.Warmup <= 0 || c.Cost.Warmup+time.Second > c.Duration || c.RabbitAPI == "") {
		errs = append(errs, errors.New("-cost: needs -duration at least 1 s longer than -cost-warmup, the management API, and no -knee"))
	}
	if c.Scratch && c.Cost.On {
		errs = append(errs, errors.New("-scratch: -cost starts its own system already"))
	}
	if c.Knee.On {
		k := c.Knee
		if k.Start <= 0 || k.Max < k.Start || k.Factor <= 1 || k.Step <= 0 || k.P99 <= 0 || k.Errors < 0 || k.Refine < 0 || k.DrainBudget <= 0 {
			errs = append(errs, errors.New("knee: need 0 < -knee-start <= -knee-max, -knee-factor > 1, positive -knee-step, -knee-p99 and -knee-drain"))
		}
	}
	return errors.Join(errs...)
}
