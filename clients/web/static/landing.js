// The landing page: only the language switch (the links are plain HTML).
import { initI18n } from "/static/i18n.js";

initI18n();
