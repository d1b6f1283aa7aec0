package main

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/order/migrations"
)

// The service does not start against an order id sequence whose INCREMENT
// BY is not the block of ids it reserves with one nextval: its blocks would
// overlap and two checkouts would get the same id.
func TestIDBlockMatchesTheSequence(t *testing.T) {
	t.Parallel()
	dbURL := testenv.Database(t)
	db, err := postgres.Open(dbURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := &Store{pool: db.Pool}
	if err := db.Prepare(ctx, migrations.FS, testLogger(t), store.checkIDBlock); err != nil {
		t.Fatalf("prepare with the migrations' sequence: %v", err)
	}
	if _, err := db.Pool.Exec(ctx, `ALTER SEQUENCE orders_id_seq INCREMENT BY 1`); err != nil {
		t.Fatal(err)
	}
	if err := store.checkIDBlock(ctx); !errors.Is(err, errIDBlock) {
		t.Fatalf("check of a sequence stepping by 1 = %v, want errIDBlock", err)
	}

	cfg := Config{Port: "0", DatabaseURL: dbURL, AMQPURL: testenv.VHost(t), DBMaxConns: 2, OutboxPoll: time.Second,
		ShutdownTimeout: 5 * time.Second, LogLevel: "error"}
	if err := run(ctx, cfg, io.Discard, nil); !errors.Is(err, errIDBlock) || ctx.Err() != nil {
		t.Fatalf("start against a sequence stepping by 1 returned %v (context: %v), want errIDBlock", err, ctx.Err())
	}
}
