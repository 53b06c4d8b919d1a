"""TEST-ONLY encryption keys (codec.py). Published in the repository, so they protect nothing: never use
them outside the test suite (conftest.py exports them as CODEC_KEYS for every test)."""
import base64

TEST_KEY_ID = "test-only-1"
TEST_CODEC_KEYS = f"{TEST_KEY_ID}:" + base64.b64encode(b"test-only key, not a secret 0001").decode()
# Another test-only key, for rotation tests.
OTHER_TEST_CODEC_KEYS = "test-only-2:" + base64.b64encode(b"test-only key, not a secret 0002").decode()
