-- +goose Up
-- Several saga steps in one round trip and one commit (Store.Advance
-- gathers the steps that come together, internal/batch): advance_order for
-- each event, in the order of (order id, event id): two replicas' batches
-- holding the same events (redelivered to the other after a channel loss)
-- claim them in the same order, so they wait on each other in a line, not
-- in a circle (each step claims its event before it locks its order);
-- each in a block of its own, so that an unknown
-- order or a payer that does not match rolls back that event's claim only
-- and comes back as its code and message instead of failing the batch.
-- Row i of the result is the event at index i of the arrays (from 1).
-- +goose StatementBegin
CREATE FUNCTION advance_orders(p_event_ids uuid[], p_event_types text[], p_order_ids bigint[], p_tos text[], p_steps text[],
                               p_ats timestamptz[], p_payer_ids bigint[], p_payer_emails text[], p_payer_amounts numeric[],
                               p_settle_when jsonb)
RETURNS TABLE (i int, fresh boolean, applied boolean, created timestamptz, code text, message text)
LANGUAGE plpgsql AS $$
DECLARE
    e record;
BEGIN
    FOR e IN SELECT * FROM unnest(p_event_ids, p_event_types, p_order_ids, p_tos, p_steps, p_ats, p_payer_ids, p_payer_emails, p_payer_amounts)
             WITH ORDINALITY AS t(event_id, event_type, order_id, to_status, step, at, payer_id, payer_email, payer_amount, n)
             ORDER BY t.order_id, t.event_id LOOP
        i := e.n;
        code := NULL;
        message := NULL;
        BEGIN
            SELECT a.fresh, a.applied, a.created INTO fresh, applied, created
            FROM advance_order(e.event_id, e.event_type, e.order_id, e.to_status, e.step, e.at,
                               e.payer_id, e.payer_email, e.payer_amount, p_settle_when) a;
        EXCEPTION WHEN SQLSTATE 'P0002' OR SQLSTATE 'CK001' THEN
            fresh := NULL;
            applied := NULL;
            created := NULL;
            code := SQLSTATE;
            message := SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION advance_orders;
