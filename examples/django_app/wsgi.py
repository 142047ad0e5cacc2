"""WSGI entry point: Django with Ory in front, so /.ory/* reaches Ory on this domain."""

import os

from ory_wsgi.django_wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")
application = get_wsgi_application()
