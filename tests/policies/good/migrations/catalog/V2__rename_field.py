def up(db):
    db.users.update_many({}, {"$rename": {"name": "fullName"}})
