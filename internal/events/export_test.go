package events

import amqp "github.com/rabbitmq/amqp091-go"

// OnSent makes p call f after it sent message i of a batch, with its
// pending confirm: a test cuts the connection at a point it knows.
func OnSent(p *Publisher, f func(i int, dc *amqp.DeferredConfirmation)) { p.sent = f }
