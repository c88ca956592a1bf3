"""The official OpenAI SDK with a key made through the Admin API: it works at once, and
once revoked the SDK raises AuthenticationError."""

import json
import urllib.request

import openai
import pytest

from conftest import ADMIN_KEY


def admin(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"x-api-key": ADMIN_KEY, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def test_a_key_created_through_the_admin_api_works_until_revoked(gateway, admin_base):
    admin(admin_base, "POST", "/admin/consumers", {"name": "sdk-team"})
    created = admin(admin_base, "POST", "/admin/consumers/sdk-team/keys")
    client = openai.OpenAI(base_url=gateway, api_key=created["key"], max_retries=0)
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content
    admin(admin_base, "DELETE", f"/admin/consumers/sdk-team/keys/{created['id']}")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
