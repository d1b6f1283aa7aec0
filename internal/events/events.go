// Package events is the one contract between the services: the event types and
// their JSON, the exchange and routing keys, and the RabbitMQ plumbing that
// carries them (a reconnecting broker connection, a confirming publisher and a
// consumer with retries and dead letters).
package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/checkout-demo/checkout/internal/money"
)

// Exchange is the durable topic exchange every event is published to.
const Exchange = "ecommerce_events"

// Routing keys: <service>.<aggregate>.<what happened>.
const (
	RouteOrderCreated     = "order.order.created"
	RoutePaymentProcessed = "payment.payment.processed"
	RoutePaymentFailed    = "payment.payment.failed"
	RouteEmailSent        = "email.email.sent"
)

// Event type names, sent as the AMQP type property and as event_type.
const (
	TypeOrderCreated     = "OrderCreated"
	TypePaymentProcessed = "PaymentProcessed"
	TypePaymentFailed    = "PaymentFailed"
	TypeEmailSent        = "EmailSent"
)

// ContentType of every message body.
const ContentType = "application/json"

// Version is the schema version of every event type defined here. A change
// that is not backwards compatible bumps it.
const Version = 1

// Meta is the envelope every event carries.
type Meta struct {
	EventID    string    `json:"event_id"`
	EventType  string    `json:"event_type"`
	Version    int       `json:"version"`
	OccurredAt time.Time `json:"occurred_at"`
}

// NewMeta returns a fresh envelope with a unique, time-ordered id.
func NewMeta(eventType string, at time.Time) Meta {
	return Meta{EventID: uuid.Must(uuid.NewV7()).String(), EventType: eventType, Version: Version, OccurredAt: at.UTC()}
}

// ValidEventID reports whether id can be an event id: a UUID. A consumer
// dead-letters an event whose id is not one at once, instead of failing on
// it in the database attempt after attempt.
func ValidEventID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil
}

// Item is one line of an order.
type Item struct {
	ProductID int64        `json:"product_id"`
	Quantity  int          `json:"quantity"`
	Price     money.Amount `json:"price"`
}

// OrderCreated is published by the order service when an order was accepted.
type OrderCreated struct {
	Meta
	OrderID     int64        `json:"order_id"`
	UserID      int64        `json:"user_id"`
	UserEmail   string       `json:"user_email"`
	TotalAmount money.Amount `json:"total_amount"`
	Items       []Item       `json:"items"`
}

// PaymentProcessed is published by the payment service when a payment succeeded.
type PaymentProcessed struct {
	Meta
	PaymentID   int64        `json:"payment_id"`
	OrderID     int64        `json:"order_id"`
	UserID      int64        `json:"user_id"`
	UserEmail   string       `json:"user_email"`
	TotalAmount money.Amount `json:"total_amount"`
	Items       []Item       `json:"items"`
}

// PaymentFailed is published by the payment service when a payment was declined.
type PaymentFailed struct {
	Meta
	PaymentID   int64        `json:"payment_id"`
	OrderID     int64        `json:"order_id"`
	UserID      int64        `json:"user_id"`
	UserEmail   string       `json:"user_email"`
	TotalAmount money.Amount `json:"total_amount"`
	Items       []Item       `json:"items"`
	Reason      string       `json:"reason"`
}

// Mail kinds carried by EmailSent.
const (
	MailConfirmation  = "order_confirmation"
	MailPaymentFailed = "payment_failed"
)

// EmailSent is published by the email service after the SMTP server accepted a mail.
type EmailSent struct {
	Meta
	OrderID   int64  `json:"order_id"`
	Kind      string `json:"kind"`
	To        string `json:"to"`
	MessageID string `json:"message_id"`
}

// Event is what a publisher can send.
type Event interface {
	EventMeta() Meta
	RoutingKey() string
}

// EventMeta returns the envelope.
func (m Meta) EventMeta() Meta { return m }

// RoutingKey of the event.
func (OrderCreated) RoutingKey() string { return RouteOrderCreated }

// RoutingKey of the event.
func (PaymentProcessed) RoutingKey() string { return RoutePaymentProcessed }

// RoutingKey of the event.
func (PaymentFailed) RoutingKey() string { return RoutePaymentFailed }

// RoutingKey of the event.
func (EmailSent) RoutingKey() string { return RouteEmailSent }

// Message is an encoded event, ready for the outbox or the broker.
type Message struct {
	ID         string
	Type       string
	RoutingKey string
	Body       []byte
}

// Encode turns an event into a message.
func Encode(e Event) (Message, error) {
	m := e.EventMeta()
	if m.EventID == "" || m.EventType == "" {
		return Message{}, fmt.Errorf("encode %T: missing event id or type", e)
	}
	body, err := json.Marshal(e)
	if err != nil {
		return Message{}, fmt.Errorf("encode %s: %w", m.EventType, err)
	}
	return Message{ID: m.EventID, Type: m.EventType, RoutingKey: e.RoutingKey(), Body: body}, nil
}
