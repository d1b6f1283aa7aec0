package events

// The topology is part of the contract: every queue any service will ever
// consume from, with its bindings. Every service declares all of it at start
// (with each queue's retry and dead-letter queues), so an event published
// before its consumer first started still reaches that consumer's queue.

// Queue names.
const (
	// QueuePayment is the payment service's queue: orders to charge and
	// orders cancelled by the saga (whose late charge must be refunded).
	QueuePayment = "payment.order-created"
	// QueueEmail is the email service's queue of mails to send.
	QueueEmail = "email.payment-results"
	// QueueOrderSaga is the order service's queue of what happened to its
	// orders downstream: payment results, refunds and mail outcomes.
	QueueOrderSaga = "order.saga-events"
)

// QueueSpec is one consumer queue and the routing keys bound to it.
type QueueSpec struct {
	Name     string
	Bindings []string
}

// Topology lists every consumer queue of the system.
var Topology = []QueueSpec{
	{Name: QueuePayment, Bindings: []string{RouteOrderCreated, RouteOrderCancelled}},
	{Name: QueueEmail, Bindings: []string{RoutePaymentProcessed, RoutePaymentFailed, RouteOrderCancelled}},
	{Name: QueueOrderSaga, Bindings: []string{RoutePaymentProcessed, RoutePaymentFailed, RoutePaymentRefunded, RouteEmailSent, RouteEmailFailed}},
}

// QueueBindings returns the routing keys bound to the named queue, or nil.
func QueueBindings(name string) []string {
	for _, q := range Topology {
		if q.Name == name {
			return q.Bindings
		}
	}
	return nil
}
