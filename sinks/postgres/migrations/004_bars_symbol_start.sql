-- tickstream schema v3: bars of a symbol from every source (the history API's /api/v1/bars
-- without `source`) by index; bars_1m's primary key starts with source and cannot serve them.
create index if not exists bars_1m_symbol_start on bars_1m (symbol, start);
