"""The official openai SDK, unchanged, pointed at gengate: videos.create
(multipart, as the SDK sends it, with and without an uploaded first frame),
create_and_poll, retrieve, list (page by page), download_content in each
variant, remix, delete, and a refused request."""
import base64
import json
import os
import sys
import warnings

import openai
from openai import OpenAI

# The SDK marks the Videos API deprecated (for OpenAI's own models).
warnings.simplefilter("ignore", DeprecationWarning)

client = OpenAI(base_url=os.environ["GENGATE_URL"] + "/v1", api_key=os.environ["GENGATE_KEY"])

made = client.videos.create_and_poll(
    prompt="a lighthouse at dusk", seconds="4", size="1280x720", poll_interval_ms=100
)
assert made.status == "completed" and made.progress == 100, made
assert (made.size, made.seconds, made.model) == ("1280x720", "4", "sora-2"), made

# A 1x1 png as the first frame, uploaded as a file.
png = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)
framed = client.videos.create(prompt="a red door", input_reference=("door.png", png, "image/png"))
assert framed.status == "queued", framed
framed = client.videos.poll(framed.id, poll_interval_ms=100)
assert framed.status == "completed", framed
assert client.videos.retrieve(made.id).id == made.id

video = client.videos.download_content(made.id).read()
thumbnail = client.videos.download_content(made.id, variant="thumbnail").read()
spritesheet = client.videos.download_content(made.id, variant="spritesheet").read()
assert video[4:8] == b"ftyp", video[:16]
for still in (thumbnail, spritesheet):
    assert still[:4] == b"RIFF" and still[8:12] == b"WEBP", still[:16]

remix = client.videos.remix(made.id, prompt="the same lighthouse at night")
assert remix.remixed_from_video_id == made.id, remix
remix = client.videos.poll(remix.id, poll_interval_ms=100)
assert remix.status == "completed", remix

# One video a page: the SDK follows the cursor through all three.
listed = [v.id for v in client.videos.list(limit=1)]
assert listed == [remix.id, framed.id, made.id], listed

deleted = client.videos.delete(framed.id)
assert deleted.deleted and deleted.id == framed.id, deleted
try:
    client.videos.retrieve(framed.id)
    sys.exit("a deleted video is still there")
except openai.NotFoundError:
    pass

try:
    client.videos.create(prompt="five seconds", seconds="5")
    sys.exit("seconds=5 was accepted")
except openai.BadRequestError as e:
    assert e.param == "seconds", (e.param, e.body)

print(json.dumps({"made": made.id, "remix": remix.id, "deleted": framed.id, "video_bytes": len(video)}))
