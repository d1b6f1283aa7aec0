-- +goose Up
-- advance_order with fewer statements in the common cases (issue 14):
-- a payment result moves the order with one UPDATE that also checks the
-- payer (the order is read again only when that UPDATE takes nothing, to
-- tell an unknown order, a payer that is not the order's and an order that
-- had ended); a step that settles the order's status settles it without
-- looking the timeline up again, and the timeline is looked up only when
-- the status just changed (the mail may have come first). The contract is
-- 00050's: the same arguments, results, errors and effects.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION advance_order(p_event_id uuid, p_event_type text, p_order_id bigint, p_to text, p_step text,
                              p_at timestamptz, p_payer_id bigint, p_payer_email text, p_payer_amount numeric,
                              p_settle_when jsonb, OUT fresh boolean, OUT applied boolean, OUT created timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    o orders%ROWTYPE;
    v_status text;
    v_settled boolean;
BEGIN
    applied := false;
    INSERT INTO inbox (event_id, event_type) VALUES (p_event_id, p_event_type) ON CONFLICT (event_id) DO NOTHING;
    fresh := FOUND;
    IF NOT fresh THEN
        RETURN;
    END IF;
    IF p_to <> '' THEN
        -- The common case in one statement: a pending order whose payer
        -- (when the event names one) is the event's.
        UPDATE orders SET status = p_to, updated_at = now(), watch_from = now(), asks = 0
        WHERE id = p_order_id AND status = 'pending'
          AND (p_payer_id IS NULL OR (user_id, user_email, total_amount) IS NOT DISTINCT FROM (p_payer_id, p_payer_email, p_payer_amount))
        RETURNING created_at, status, settled INTO created, v_status, v_settled;
    END IF;
    IF p_to = '' OR NOT FOUND THEN
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
            RETURN; -- the order had ended: this step did not happen
        END IF;
        v_status := o.status;
        v_settled := o.settled;
    END IF;
    INSERT INTO order_timeline (order_id, step, at, event_id) VALUES (p_order_id, p_step, p_at, p_event_id)
    ON CONFLICT DO NOTHING;
    applied := FOUND;
    IF NOT applied OR v_settled OR NOT (p_settle_when ? v_status) THEN
        RETURN; -- nothing new, settled already, or a status no step settles
    END IF;
    -- This step settles the order, or the status just changed and a step
    -- recorded before (the mail came first) settles it now.
    IF (p_settle_when -> v_status) ? p_step OR (p_to <> '' AND EXISTS (
            SELECT 1 FROM order_timeline t WHERE t.order_id = p_order_id
            AND t.step IN (SELECT jsonb_array_elements_text(p_settle_when -> v_status)))) THEN
        UPDATE orders SET settled = true WHERE id = p_order_id;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION advance_order(p_event_id uuid, p_event_type text, p_order_id bigint, p_to text, p_step text,
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
