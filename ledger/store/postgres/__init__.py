"""The PostgreSQL edge: the recorder, its SQL, the writer queue, the libpq append and
notifications."""
