"""Web tasks in a real browser: the ``web:`` family (BrowserGym in Chromium), its checked actions and
the threads that own its browsers."""
