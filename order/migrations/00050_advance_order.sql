-- +goose Up
-- One saga step in one round trip (Store.Advance): claim the event in the
-- inbox, lock the order, check the payer, move a pending order on, record
-- the timeline step and settle the order, as one transaction. It raises
-- P0002 for an unknown order and CK001 for a payer that is not the
-- order's; either rolls the claim back. settle_when maps a status to the
-- timeline steps that settle an order of that status (Go's constants).
-- +goose StatementBegin
CREATE FUNCTION advance_order(p_event_id uuid, p_event_type text, p_order_id bigint, p_to text, p_step text,
                              p_at timestamptz, p_payer_id bigint, p_payer_email text, p_payer_amount numeric,
                              p_settle_when jsonb, OUT fresh boolean, OUT applied boolean, OUT created timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    o orders%ROWTYPE;
BEGIN
    applied := false;
    INSERT INTO inbox (event_id, event_type) VALUES (p_event_id, p_event_type) ON CONFLICT (event_id) DO NOTHING;
    fresh := FOUND;
    IF NOT fresh THEN
        RETURN;
    END IF;
    SELECT * INTO o FROM orders WHERE id = p_order_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'order % not found', p_order_id USING ERRCODE = 'P0002';
    END IF;
    created := o.created_at;
    IF p_payer_id IS NOT NULL AND (o.user_id, o.user_email, o.total_amount) IS DISTINCT FROM (p_payer_id, p_payer_email, p_payer_amount) THEN
        RAISE EXCEPTION 'the event says user % <%> paid %, the order is user % <%> for %',
            p_payer_id, p_payer_email, p_payer_amount, o.user_id, o.user_email, o.total_amount USING ERRCODE = 'CK001';
    END IF;
    IF p_to <> '' THEN
        UPDATE orders SET status = p_to, updated_at = now(), watch_from = now(), asks = 0
        WHERE id = p_order_id AND status = 'pending';
        IF NOT FOUND THEN
            RETURN; -- the order had ended: this step did not happen
        END IF;
    END IF;
    INSERT INTO order_timeline (order_id, step, at, event_id) VALUES (p_order_id, p_step, p_at, p_event_id)
    ON CONFLICT DO NOTHING;
    applied := FOUND;
    IF applied THEN
        UPDATE orders x SET settled = true WHERE x.id = p_order_id AND NOT x.settled AND EXISTS (
            SELECT 1 FROM order_timeline t WHERE t.order_id = x.id
            AND t.step IN (SELECT jsonb_array_elements_text(p_settle_when -> x.status)));
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION advance_order;
