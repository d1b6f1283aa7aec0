-- +goose Up
-- Store.Intend in one round trip: write the order's payment intent
-- (charging) unless it has a payment, lock and return that payment, and
-- claim the event in the inbox. For an event not seen before whose order
-- has its result already (the saga asking again), the claim is left to the
-- caller, which writes the result again in the same transaction.
-- +goose StatementBegin
CREATE FUNCTION intend_payment(p_event_id uuid, p_event_type text, p_order_id bigint, p_user_id bigint,
                               p_user_email text, p_amount numeric, p_items jsonb)
RETURNS TABLE (fresh boolean, inserted boolean, id bigint, order_id bigint, user_id bigint, user_email text,
               amount numeric, status text, reason text, provider_ref text, event_id text, created_at timestamptz,
               items jsonb, cancelled boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p payments%ROWTYPE;
BEGIN
    fresh := NOT EXISTS (SELECT 1 FROM inbox i WHERE i.event_id = p_event_id);
    INSERT INTO payments (order_id, user_id, user_email, amount, status, event_id, items)
    VALUES (p_order_id, p_user_id, p_user_email, p_amount, 'charging', p_event_id, p_items)
    ON CONFLICT (order_id) DO NOTHING;
    inserted := FOUND;
    SELECT * INTO p FROM payments x WHERE x.order_id = p_order_id FOR UPDATE;
    IF NOT (fresh AND NOT inserted AND p.status IN ('succeeded', 'declined')) THEN
        INSERT INTO inbox (event_id, event_type) VALUES (p_event_id, p_event_type) ON CONFLICT DO NOTHING;
        fresh := FOUND;
    END IF;
    RETURN QUERY SELECT fresh, inserted, p.id, p.order_id, p.user_id, p.user_email, p.amount, p.status,
        coalesce(p.reason, ''), coalesce(p.provider_ref, ''), p.event_id::text, p.created_at, p.items,
        p.cancelled_at IS NOT NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION intend_payment;
