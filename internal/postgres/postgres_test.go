package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/checkout-demo/checkout/internal/testenv"
)

// The classification decides what a client is told: IsUnavailable errors
// answer "nothing was written, retry", IsUnknownOutcome ones must not. Real
// errors from a real server where they can be made cheaply, wrapped the way
// the stores wrap them.
func TestErrorClassification(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	// A statement the server cancelled (its caller's deadline) did nothing.
	_, cancelled := pool.Exec(ctx, "SET statement_timeout = '10ms'; SELECT pg_sleep(1)")
	// The server answered: the statement failed and was rolled back.
	_, failed := pool.Exec(ctx, "SELECT 1/0")
	// Nobody listens on the port: the statement never left.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	refusedPool, err := pgxpool.New(ctx, "postgres://postgres@"+addr+"/x?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(refusedPool.Close)
	_, refused := refusedPool.Exec(ctx, "SELECT 1")
	_, acquire := Acquire(ctx, refusedPool)

	tests := []struct {
		name                 string
		err                  error
		unavailable, unknown bool
	}{
		{"OK", nil, false, false},
		{"StatementCancelled", cancelled, true, false},
		{"ServerRefusedStatement", failed, false, false},
		{"ConnectionRefused", refused, true, false},
		{"PoolNeverSent", acquire, true, false},
		{"NotReady", fmt.Errorf("get order: %w", ErrNotReady), true, false},
		{"ConnectionDroppedAfterSend", fmt.Errorf("insert order: %w", io.ErrUnexpectedEOF), false, true},
		{"EOF", fmt.Errorf("commit: %w", io.EOF), false, true},
		{"DeadlineWithoutAnswer", fmt.Errorf("insert order: %w", context.DeadlineExceeded), false, true},
		{"ConnClosed", fmt.Errorf("insert: %w", pgconn.ErrConnClosed), false, true},
		{"Other", errors.New("boom"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "StatementCancelled" || tt.name == "ServerRefusedStatement" || tt.name == "ConnectionRefused" {
				if tt.err == nil {
					t.Fatal("the statement did not fail")
				}
			}
			if got := IsUnavailable(tt.err); got != tt.unavailable {
				t.Errorf("IsUnavailable(%v) = %v, want %v", tt.err, got, tt.unavailable)
			}
			if got := IsUnknownOutcome(tt.err); got != tt.unknown {
				t.Errorf("IsUnknownOutcome(%v) = %v, want %v", tt.err, got, tt.unknown)
			}
			if got := IsTransient(tt.err); got != (tt.unavailable || tt.unknown) {
				t.Errorf("IsTransient(%v) = %v", tt.err, got)
			}
		})
	}
}

// A transaction whose pooled connection died before the server saw it is
// run once more; one that failed on the server is not.
func TestInTxRetriesOnlyWhatNeverReachedTheServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	calls := 0
	err = InTx(ctx, pool, func(tx pgx.Tx) error {
		calls++
		_, err := tx.Exec(ctx, "SELECT 1/0")
		return err
	})
	if err == nil || calls != 1 {
		t.Fatalf("InTx: err %v after %d calls, want a failure after 1", err, calls)
	}
}

// A migration that does not apply is not an outage: Prepare says so at
// once instead of retrying until its context ends.
func TestPrepareFailsFastOnABrokenMigration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := Open(testenv.Database(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	migrations := fstest.MapFS{"00001_broken.sql": {Data: []byte("-- +goose Up\nCREATE TABLE t (id bigint PRIMARY KEY;\n")}}
	err = db.Prepare(ctx, migrations, slog.New(slog.DiscardHandler))
	if err == nil || ctx.Err() != nil {
		t.Fatalf("Prepare = %v (context: %v), want the migration's error before the deadline", err, ctx.Err())
	}
	if db.Ready() {
		t.Fatal("the database counts as ready")
	}
}

// The one mapping to HTTP: only a certain "nothing was written" says retry
// freely; a write with an unknown outcome says so.
func TestAnswer(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		write  bool
		status int
	}{
		{"Unavailable", ErrNotReady, true, 503},
		{"UnknownWrite", io.ErrUnexpectedEOF, true, 504},
		{"UnknownRead", io.ErrUnexpectedEOF, false, 503},
		{"Refused", errors.New("boom"), true, 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if status, detail := Answer(tt.err, tt.write, "the x database"); status != tt.status || detail == "" {
				t.Errorf("Answer = %d %q, want %d", status, detail, tt.status)
			}
		})
	}
}
