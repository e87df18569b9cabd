"""Index users by email (the 2.4 catalog looks users up by it)."""


def up(db):
    db["users"].create_index("email", name="users_email")


def down(db):
    db["users"].drop_index("users_email")
