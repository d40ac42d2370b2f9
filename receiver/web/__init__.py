"""The browser side of pdrelay: the /status HTML page and its rule playground.

- :mod:`receiver.web.view`: the /status dict as display text (durations, zero counts left out);
- :mod:`receiver.web.page`: that text in ``status.html`` (Jinja2, autoescaped), its inline
  ``status.css`` and ``status.js`` allowed by hash in the Content-Security-Policy;
- :mod:`receiver.web.playground`: ``POST /status/playground``, the rules traced on a pasted body.

Nothing here loads an external asset: the page works offline. Every value reaches the page
as text, never as markup.
"""
