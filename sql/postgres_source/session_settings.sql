SELECT set_config('DateStyle', 'ISO, MDY', false),
       set_config('TimeZone', 'UTC', false),
       set_config('IntervalStyle', 'postgres', false),
       set_config('extra_float_digits', '3', false)
