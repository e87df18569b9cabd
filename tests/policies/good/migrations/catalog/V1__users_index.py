def up(db):
    db.users.create_index("fullName")


def down(db):
    db.users.drop_index("fullName_1")
