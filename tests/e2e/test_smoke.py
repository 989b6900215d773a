from tests.factories import make_pool


async def test_create_and_read_pool(client):
    created = await client.create_work_pool(make_pool(name="smoke"))
    read = await client.read_work_pool("smoke")
    assert read.id == created.id
    assert read.status == "NOT_READY"
