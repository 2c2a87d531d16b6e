-- Demand data for pools that size themselves (SPEC §5.2): every claim and every miss of a preset, and
-- each prebuild's time to ready (create -> eligible). Kept 35 days (SPEC §10), pruned by the reconciler. Keyed by
-- template and preset *name*, not preset id: a push makes new preset rows, and a pool's demand history must
-- survive a new version.
CREATE TABLE preset_demand (
    id bigserial PRIMARY KEY,
    template_id uuid NOT NULL,
    preset_name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('claim', 'miss')),
    at timestamptz NOT NULL
);
CREATE INDEX preset_demand_by_preset ON preset_demand (template_id, preset_name, at);
CREATE INDEX preset_demand_at ON preset_demand (at);

CREATE TABLE prebuild_ready_times (
    workspace_id uuid PRIMARY KEY,
    template_id uuid NOT NULL,
    preset_name text NOT NULL,
    created_at timestamptz NOT NULL,
    ready_at timestamptz NOT NULL
);
CREATE INDEX prebuild_ready_times_by_preset ON prebuild_ready_times (template_id, preset_name, ready_at);

-- How a pool's target is computed: a base-stock autoscaler ({min, max, target_hit_rate}) or an expression.
ALTER TABLE template_version_presets
    ADD COLUMN autoscale jsonb,
    ADD COLUMN target_expression text;

-- The autoscaler's memory, so that the stabilization window survives restarts and replicas: the last target it
-- decided, when it last rose, and when it last changed (scale-down steps are spaced).
CREATE TABLE preset_autoscale_state (
    template_id uuid NOT NULL,
    preset_name text NOT NULL,
    target integer NOT NULL,
    raised_at timestamptz NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (template_id, preset_name)
);
