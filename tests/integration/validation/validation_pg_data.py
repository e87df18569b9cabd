"""Shape of the ``orders`` table the PostgreSQL validation tests run against."""

ROWS = 3000
NULL_STATUS = 30  # ids divisible by 100
BOGUS_STATUS = 7  # ids 1..7 (not divisible by 100)
PLAINTEXT_PASSWORDS = 4  # ids 11..14
SECRET_MARK = "plaintext-secret-value"
