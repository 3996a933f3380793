// Starts Swagger UI on /docs (app/docs.py): a file, not an inline script, so the CSP holds.
(function () {
  "use strict";

  // Deferred after the bundle: the page is parsed and SwaggerUIBundle is defined.
  var root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [window.SwaggerUIBundle.presets.apis],
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // The online validator badge would load an image from another site.
    validatorUrl: null,
  });
})();
