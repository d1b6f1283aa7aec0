package amqptel_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/telemetry/amqptel"
	"github.com/checkout-demo/checkout/internal/telemetry/telemetrytest"
	"github.com/checkout-demo/checkout/internal/testenv"
)

func spanNamed(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range exp.GetSpans() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no span %q among %d", name, len(exp.GetSpans()))
	return tracetest.SpanStub{}
}

// TestAMQPTrace sends a message through a real RabbitMQ: the consumer's
// span continues the producer's trace, a retry keeps it, and a replayed
// dead letter starts a new trace linked to the old one.
func TestAMQPTrace(t *testing.T) {
	exp := telemetrytest.Memory(t, "order")
	ch := testenv.Channel(t, testenv.VHost(t))
	q, err := ch.QueueDeclare("payment.order-created", false, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	send := func(ctx context.Context, name string, msg amqp.Publishing) {
		t.Helper()
		ctx, span := amqptel.StartPublish(ctx, "", q.Name, &msg)
		span.SetName(name)
		err := ch.PublishWithContext(ctx, "", q.Name, false, false, msg)
		telemetry.EndSpan(span, err)
		if err != nil {
			t.Fatal(err)
		}
	}
	receive := func() amqp.Delivery {
		t.Helper()
		select {
		case d := <-deliveries:
			return d
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery")
		}
		return amqp.Delivery{}
	}

	// The relay publishes under the context of the order's transaction.
	root, insert := otel.Tracer("x").Start(context.Background(), "insert order")
	insert.End()
	send(root, "publish 1", amqp.Publishing{MessageId: "ev-1", Headers: amqp.Table{events.HeaderAttempt: int32(1)}})
	d := receive()
	ctx, handle := amqptel.StartConsume(context.Background(), q.Name, &d)
	handle.End()
	publish := spanNamed(t, exp, "publish 1")
	consume := spanNamed(t, exp, "process "+q.Name)
	if consume.SpanContext.TraceID() != insert.SpanContext().TraceID() {
		t.Fatalf("consumer trace %s, producer trace %s", consume.SpanContext.TraceID(), insert.SpanContext().TraceID())
	}
	if consume.Parent.SpanID() != publish.SpanContext.SpanID() {
		t.Errorf("consumer's parent %s, want the publish span %s", consume.Parent.SpanID(), publish.SpanContext.SpanID())
	}
	if len(consume.Links) != 1 || consume.Links[0].SpanContext.SpanID() != publish.SpanContext.SpanID() {
		t.Errorf("consumer links %v, want one to the publish span", consume.Links)
	}
	if consume.SpanKind != trace.SpanKindConsumer || publish.SpanKind != trace.SpanKindProducer {
		t.Errorf("kinds %v/%v", publish.SpanKind, consume.SpanKind)
	}

	// A retry is published from inside the failed handling: same trace.
	send(ctx, "publish retry", amqp.Publishing{MessageId: "ev-1", Headers: d.Headers})
	retried := receive()
	_, again := amqptel.StartConsume(context.Background(), q.Name, &retried)
	again.End()
	if again.SpanContext().TraceID() != insert.SpanContext().TraceID() {
		t.Error("the retried delivery left the trace")
	}

	// A dead letter replayed: a new trace, linked to the one it failed in.
	rctx, replay, headers := amqptel.StartReplay(context.Background(), q.Name, retried.Headers)
	err = ch.PublishWithContext(rctx, "", q.Name, false, false, amqp.Publishing{MessageId: "ev-1", Headers: headers})
	telemetry.EndSpan(replay, err)
	if err != nil {
		t.Fatal(err)
	}
	if headers[events.HeaderAttempt] != int32(1) {
		t.Errorf("replay dropped other headers: %v", headers)
	}
	replayed := receive()
	_, third := amqptel.StartConsume(context.Background(), q.Name, &replayed)
	third.End()
	if third.SpanContext().TraceID() == insert.SpanContext().TraceID() {
		t.Error("the replayed dead letter is still in the old trace")
	}
	rs := spanNamed(t, exp, "replay "+q.Name)
	if third.SpanContext().TraceID() != rs.SpanContext.TraceID() {
		t.Error("the replayed delivery is not in the replay's trace")
	}
	if len(rs.Links) != 1 || rs.Links[0].SpanContext.TraceID() != insert.SpanContext().TraceID() {
		t.Errorf("replay links %v, want one to the old trace", rs.Links)
	}
}

func TestHeaderCarrier(t *testing.T) {
	c := amqptel.HeaderCarrier{"a": "x", "b": []byte("y"), "c": int32(3)}
	if c.Get("a") != "x" || c.Get("b") != "y" || c.Get("c") != "" || c.Get("missing") != "" {
		t.Errorf("Get: %q %q %q", c.Get("a"), c.Get("b"), c.Get("c"))
	}
	c.Set("traceparent", "v")
	if len(c.Keys()) != 4 {
		t.Errorf("Keys = %v", c.Keys())
	}
	if h := amqptel.Inject(context.Background(), nil); h == nil {
		t.Error("Inject(nil) returned nil")
	}
	if ctx := amqptel.Extract(context.Background(), nil); trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("a span context from no headers")
	}
}
