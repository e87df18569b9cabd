def up(db):
    db.users.update_many({}, {"$rename": {"name": "fullName"}})


def down(db):
    db.users.update_many({}, {"$rename": {"fullName": "name"}})
