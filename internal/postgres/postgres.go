// Package postgres opens a service's database: it creates the database when it
// is missing, applies the service's embedded migrations under an advisory lock
// (so replicas that start together migrate once), and keeps trying in the
// background while Postgres is away, so a service can start before its
// database.
package postgres

import (
	"github.com/checkout-demo/checkout/internal/backoff"

	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/web"
)

// ErrNotReady is returned while the database has not been prepared yet.
var ErrNotReady = errors.New("database not ready")

// DB is a service's connection pool and whether its schema is in place.
type DB struct {
	Pool  *pgxpool.Pool
	ready atomic.Bool
	done  chan struct{}
}

// Open returns a pool for url without connecting. Call Prepare (usually in
// its own goroutine) to create and migrate the database.
func Open(url string, maxConns int32) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	// A short connect timeout makes requests fail fast (503) while Postgres
	// restarts, instead of hanging.
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 5*time.Second {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	// When a caller's context ends, ask the server to cancel the statement
	// and wait (a little) for its answer. pgx's default only closes the
	// socket, and the server then carries on: a checkout that timed out
	// behind a lock would still commit after the client was told 503.
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: 2 * time.Second}
	}
	// Query spans under the caller's span, when tracing is on (call
	// telemetry.Setup before Open). Off, the hook is not installed at all.
	if telemetry.Enabled() {
		cfg.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithDisableAcquireTracer())
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	return &DB{Pool: pool, done: make(chan struct{})}, nil
}

// Ready reports whether Prepare has finished.
func (db *DB) Ready() bool { return db.ready.Load() }

// Prepared is closed once Prepare has finished.
func (db *DB) Prepared() <-chan struct{} { return db.done }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if !db.Ready() {
		return ErrNotReady
	}
	return db.Pool.Ping(ctx)
}

// Prepare creates the database if it is missing and applies migrations,
// then runs checks (of what the code assumes of the schema), retrying with
// backoff while the database is away, until it succeeds or ctx is done;
// only then is the database ready. An error that will not heal by waiting
// (a migration that does not apply, a role without the rights it needs, a
// check that fails other than by the database's absence) is returned at
// once: retrying it forever would look like an outage.
func (db *DB) Prepare(ctx context.Context, migrations fs.FS, log *slog.Logger, checks ...func(context.Context) error) error {
	bo := backoff.Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 0; ; attempt++ {
		err := db.prepare(ctx, migrations)
		final := false
		for i := 0; err == nil && i < len(checks); i++ {
			err = checks[i](ctx)
			final = err != nil && !IsTransient(err)
		}
		if err == nil {
			db.ready.Store(true)
			close(db.done)
			log.Info("database ready", "database", db.Pool.Config().ConnConfig.Database)
			return nil
		}
		var pgErr *pgconn.PgError
		if final || errors.As(err, &pgErr) && !IsTransient(err) {
			return fmt.Errorf("prepare database %s: %w", db.Pool.Config().ConnConfig.Database, err)
		}
		d := bo.Delay(attempt)
		log.Warn("database not ready, retrying", "err", err, "retry_in", d.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

func (db *DB) prepare(ctx context.Context, migrations fs.FS) error {
	if err := db.Pool.Ping(ctx); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
			return fmt.Errorf("ping: %w", err)
		}
		if err := CreateDatabase(ctx, db.Pool.Config().ConnConfig); err != nil {
			return err
		}
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	sqlDB := stdlib.OpenDBFromPool(db.Pool)
	defer sqlDB.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// CreateDatabase creates the database named in cfg, connecting to the
// "postgres" maintenance database on the same server. It is a no-op when the
// database exists (also when another replica created it first).
func CreateDatabase(ctx context.Context, cfg *pgx.ConnConfig) error {
	admin := cfg.Copy()
	name := admin.Database
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to create database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505")) { // duplicate_database, unique_violation (a concurrent create)
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// Close closes the pool.
func (db *DB) Close() { db.Pool.Close() }

// ErrNothingWritten marks a failure that certainly wrote nothing, however
// it looks: a connection the pool could not hand out (the statement never
// left the service), or a read-only step before the write.
var ErrNothingWritten = errors.New("nothing was written")

// NothingWritten wraps err with ErrNothingWritten.
func NothingWritten(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrNothingWritten, err)
}

// Acquire takes a connection from the pool. A failure (the pool is
// exhausted past ctx's deadline, the database refuses connections) is
// wrapped with ErrNothingWritten.
func Acquire(ctx context.Context, pool *pgxpool.Pool) (*pgxpool.Conn, error) {
	c, err := pool.Acquire(ctx)
	return c, NothingWritten(err)
}

// IsUnavailable reports whether err means the database could not do the
// work and certainly did none of it: not prepared yet, no connection to be
// had (refused, the pool never sent the statement), a statement the server
// cancelled (57014) or refused because it is shutting down. The caller may
// answer 503 "nothing was written; retry".
//
// An error that can arrive after the statement reached the server (a
// dropped connection, a timeout without the server's confirmation) is not
// one of these: see IsUnknownOutcome.
func IsUnavailable(err error) bool {
	var (
		pgErr   *pgconn.PgError
		connErr *pgconn.ConnectError
	)
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrNotReady), errors.Is(err, ErrNothingWritten), errors.As(err, &connErr), pgconn.SafeToRetry(err):
		return true
	case errors.As(err, &pgErr):
		// Class 08: connection exception; 57P01-03: admin shutdown, crash
		// shutdown, cannot connect now; 57014: the statement was cancelled
		// (its caller's deadline, statement_timeout), so it did nothing;
		// 53300: too many connections.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03" ||
			pgErr.Code == "57014" || pgErr.Code == "53300"
	}
	return false
}

// IsUnknownOutcome reports whether err leaves it unknown whether the work
// was done: the connection dropped or timed out after the statement (or the
// COMMIT) was sent, and the server's answer never came. A caller must not
// say "nothing was written"; a retry is safe only with an idempotency key.
func IsUnknownOutcome(err error) bool {
	if err == nil || IsUnavailable(err) {
		return false
	}
	var (
		pgErr  *pgconn.PgError
		netErr net.Error
	)
	if errors.As(err, &pgErr) {
		return false // the server answered: the statement failed and was rolled back
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.As(err, &netErr) || pgconn.Timeout(err) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// Refused reports whether the server answered err for a statement it was
// able to run and would not (a constraint, a deadlock, a raised error):
// the work was rolled back, and trying it again will not be refused for
// the database's absence. In a batch of several callers' statements, one
// statement's refusal rolls back the others' too (batch.Group.Alone).
func Refused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && !IsUnavailable(err)
}

// IsTransient reports whether err is the database's absence, certain or
// not. Consumers retry such failures without using up attempts: an outage
// must not dead-letter good messages.
func IsTransient(err error) bool { return IsUnavailable(err) || IsUnknownOutcome(err) }

// InTx runs fn in a transaction and commits it. When the transaction fails
// in a way that is certain to have happened before the server saw it (a
// pooled connection that died while the database restarted), it is run once
// more on a fresh connection.
func InTx(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) error) error {
	return Retry(ctx, func() error { return pgx.BeginFunc(ctx, pool, fn) })
}

// Retry runs fn, and once more when it failed in a way that is certain to
// have happened before the server saw anything (pgconn.SafeToRetry: a
// pooled connection that died while the database restarted).
func Retry(ctx context.Context, fn func() error) error {
	err := fn()
	if err != nil && pgconn.SafeToRetry(err) && ctx.Err() == nil {
		err = fn()
	}
	return err
}

// Answer is the one mapping of a database error to what an API client is
// told: 503 when the database certainly did nothing (retrying is safe); for
// a write whose outcome is unknown (its answer was lost), 504 saying so; a
// read that got no answer, 503; anything else, 500 (the database refused
// the statement: nothing was written). what names the database for people
// ("the order database"); the cause itself is for the log only.
func Answer(err error, write bool, what string) (status int, detail string) {
	switch {
	case IsUnavailable(err):
		return http.StatusServiceUnavailable, what + " is unavailable; nothing was written; please retry"
	case IsUnknownOutcome(err) && write:
		return http.StatusGatewayTimeout, what + " did not answer; the change may or may not have been made: " +
			"retry with the same Idempotency-Key header, or look it up before trying again"
	case IsUnknownOutcome(err):
		return http.StatusServiceUnavailable, what + " did not answer; please retry"
	}
	return http.StatusInternalServerError, "internal error"
}

// WriteError answers a request whose database work (op) failed with err,
// as Answer maps it (a POST is a write); what names the database. The
// cause goes to the log only, and nothing is answered to a client that is
// gone.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, what, op string, err error) {
	log.ErrorContext(r.Context(), op, "err", err, "request_id", web.RequestID(r.Context()))
	if r.Context().Err() != nil {
		return
	}
	status, detail := Answer(err, r.Method == http.MethodPost, what)
	web.WriteProblem(w, r, status, detail)
}
