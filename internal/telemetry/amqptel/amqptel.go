// Package amqptel carries trace context across RabbitMQ: a propagation
// carrier over amqp.Table and the publish, consume and replay spans. It is
// apart from telemetry so that a binary without a broker (the gateway)
// does not link amqp091.
package amqptel

import (
	"context"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/checkout-demo/checkout/internal/telemetry"
)

// HeaderCarrier lets the propagator read and write trace context in AMQP
// message headers (traceparent, tracestate, baggage), as no maintained
// amqp091 instrumentation exists.
type HeaderCarrier amqp.Table

// Get returns the header's value when it is a string (or bytes).
func (c HeaderCarrier) Get(key string) string {
	switch v := c[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

// Set sets the header.
func (c HeaderCarrier) Set(key, value string) { c[key] = value }

// Keys lists the headers.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx into headers and returns them
// (a new table when headers is nil). With no span in ctx it writes nothing.
func Inject(ctx context.Context, headers amqp.Table) amqp.Table {
	if headers == nil {
		headers = amqp.Table{}
	}
	otel.GetTextMapPropagator().Inject(ctx, HeaderCarrier(headers))
	return headers
}

// Extract returns ctx carrying the remote trace context found in headers.
func Extract(ctx context.Context, headers amqp.Table) context.Context {
	if headers == nil {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, HeaderCarrier(headers))
}

// StartPublish starts the producer span of a message published to exchange
// with routingKey ("" exchange and a queue name for the moves to retry and
// dead-letter queues), and injects its context into msg.Headers so the
// consumer continues the trace. End the span when the broker confirmed;
// pass the confirm's error to EndSpan.
func StartPublish(ctx context.Context, exchange, routingKey string, msg *amqp.Publishing) (context.Context, trace.Span) {
	dest := exchange
	if dest == "" {
		dest = routingKey
	}
	ctx, span := telemetry.Tracer().Start(ctx, "publish "+dest,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("publish"),
			semconv.MessagingDestinationName(dest),
			semconv.MessagingRabbitMQDestinationRoutingKey(routingKey),
			semconv.MessagingMessageID(msg.MessageId),
		))
	msg.Headers = Inject(ctx, msg.Headers)
	return ctx, span
}

// StartConsume starts the span of handling delivery d from queue. It
// continues the producer's trace (the publish span is its parent, so one
// checkout is one trace across every hop) and links to the producer span
// as well, as the messaging conventions ask. Retried deliveries carry the
// context their mover injected, so they stay in the trace too.
func StartConsume(ctx context.Context, queue string, d *amqp.Delivery) (context.Context, trace.Span) {
	ctx = Extract(ctx, d.Headers)
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingDestinationName(d.Exchange),
			semconv.MessagingRabbitMQDestinationRoutingKey(d.RoutingKey),
			semconv.MessagingConsumerGroupName(queue),
			semconv.MessagingMessageID(d.MessageId),
		),
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	return telemetry.Tracer().Start(ctx, "process "+queue, opts...)
}

// StartReplay starts a new trace for a dead letter that is put back on its
// queue, linked to the trace it failed in, and writes the new context into
// headers (replacing the old one) so its next handling belongs to the new
// trace.
func StartReplay(ctx context.Context, queue string, headers amqp.Table) (context.Context, trace.Span, amqp.Table) {
	old := trace.SpanContextFromContext(Extract(context.Background(), headers))
	opts := []trace.SpanStartOption{
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("replay"),
			semconv.MessagingDestinationName(queue),
		),
	}
	if old.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: old, Attributes: []attribute.KeyValue{attribute.String("checkout.link", "dead_letter")}}))
	}
	ctx, span := telemetry.Tracer().Start(ctx, "replay "+queue, opts...)
	if headers == nil {
		headers = amqp.Table{}
	}
	for _, k := range otel.GetTextMapPropagator().Fields() {
		delete(headers, k)
	}
	return ctx, span, Inject(ctx, headers)
}

// QueueDepth returns a depth function for RegisterQueueDepths: it opens a
// channel with open (events.Broker's Channel), declares queue passively
// (which fails, and closes the channel, when the queue does not exist) and
// closes the channel again.
func QueueDepth(open func(ctx context.Context) (*amqp.Channel, error)) func(ctx context.Context, queue string) (int, error) {
	return func(ctx context.Context, queue string) (int, error) {
		ch, err := open(ctx)
		if err != nil {
			return 0, err
		}
		defer ch.Close()
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return 0, err
		}
		return q.Messages, nil
	}
}
